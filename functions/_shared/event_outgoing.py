"""`message.outgoing`: the account wrote from its phone or another app (not through /telegram/send). Stored as the
manager's message (`metadata.source` "telegram_app"), its file fetched like an incoming one's, never twice.
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from functions._shared.event_context import EventContext, present
from functions._shared.event_fields import EventBase, OptionalTelegramId, TelegramId
from functions._shared.event_rpc import event_rpc
from functions._shared.incoming_media import StoredFile
from functions._shared.media import IncomingMedia
from functions._shared.messages import find_by_telegram_key

SOURCE = "telegram_app"


class OutgoingEvent(EventBase):
    message_id: TelegramId
    to_id: OptionalTelegramId = None
    text: str | None = None
    media: IncomingMedia | None = None
    history: bool = False

    @model_validator(mode="after")
    def _has_chat(self) -> OutgoingEvent:
        if not (self.chat_id or self.to_id):
            raise ValueError("chat_id or to_id is required")
        return self

    @property
    def telegram_chat_id(self) -> str:
        # A private chat is the user's id.
        return self.chat_id or self.to_id or ""


async def handle_outgoing(context: EventContext, event: OutgoingEvent) -> dict[str, Any]:
    db = context.runtime.db
    stored: StoredFile | None = None
    if event.media is not None:
        # A redelivery (or telegram-send's row of the same message) is answered before the file is fetched again.
        earlier = await find_by_telegram_key(db, organization_id=context.organization_id,
                                             account_phone=event.account_phone, chat_id=event.telegram_chat_id,
                                             external_message_id=event.message_id)
        if earlier is not None:
            return outgoing_answer(earlier.message_id, earlier.client_id, duplicate=True)
        stored = await context.store_media(event.media, chat_id=event.telegram_chat_id, message_id=event.message_id)
    result = await event_rpc(db, "ingest_telegram_outgoing", outgoing_params(context, event, stored),
                             "storing the account's own message")
    return outgoing_answer(str(result["message_id"]), str(result["client_id"]), duplicate=bool(result["duplicate"]))


def outgoing_params(context: EventContext, event: OutgoingEvent, stored: StoredFile | None) -> dict[str, Any]:
    """ingest_telegram_outgoing's parameters for the event (its file already in chat-media when `stored`); the
    batch's set-based rpc (event_batch) takes the same."""
    chat = event.telegram_chat_id
    file: dict[str, Any] = {}
    metadata: dict[str, Any] = {"source": SOURCE, **context.source_metadata(event), "chat_id": chat,
                                "telegram_message_id": event.message_id, "history": event.history or None}
    if stored is not None:
        file = {"p_file_url": stored.file_url, "p_file_type": stored.file_type, "p_file_name": stored.file_name}
        metadata.update(stored.metadata)
    return {
        "p_organization_id": context.organization_id,
        "p_integration_id": context.integration.id,
        "p_account_phone": event.account_phone,
        "p_telegram_chat_id": chat,
        "p_external_message_id": event.message_id,
        "p_to_user_id": event.to_id,
        "p_message_text": event.text or "",
        "p_sent_at": event.timestamp.isoformat() if event.timestamp else None,
        **file,
        "p_metadata": present(metadata),
    }


def outgoing_answer(message_id: str, client_id: str, *, duplicate: bool) -> dict[str, Any]:
    return {"success": True, "messageId": message_id, "clientId": client_id, "duplicate": duplicate}
