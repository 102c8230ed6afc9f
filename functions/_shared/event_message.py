"""`message`: a client wrote to the account (or an imported message of its history). `WebhookPayload` is its body
(crm_server's, or the original plan's minimal one); `incoming_params` is what ingest_telegram_webhook stores of it,
shared by the single path (`handle_message`) and the batch's set-based rpc (event_batch), so that both store the same.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from pydantic import BaseModel, Field, field_validator, model_validator

from functions._shared.event_context import EventContext
from functions._shared.event_fields import EventBase, OptionalTelegramId, TelegramId, phone_text
from functions._shared.incoming_media import StoredFile
from functions._shared.media import IncomingMedia
from functions._shared.messages import find_by_telegram_key, ingest_incoming
from functions._shared.phones import normalize_phone_or_none
from functions._shared.rows import IngestResult

NOTIFICATION_PREVIEW_LENGTH = 200


class WebhookPayload(EventBase):
    """What crm_server posts, and the minimal payload of the original plan
    (`{project_id, account_phone, from_id, from_username, text}`): everything else is optional."""

    from_id: TelegramId
    from_username: str | None = Field(None, max_length=100)
    from_first_name: str | None = Field(None, max_length=500)
    from_last_name: str | None = Field(None, max_length=500)
    from_phone: str | None = Field(None, max_length=40)
    message_id: OptionalTelegramId = None
    text: str | None = None
    file_url: str | None = Field(None, max_length=2000)
    file_type: str | None = Field(None, max_length=100)
    file_name: str | None = Field(None, max_length=255)
    # crm_server's description of the message's file (the contract's "Media"); the legacy file_* fields beside it
    # are for receivers of the original plan, and are not what this function stores when `media` is present.
    media: IncomingMedia | None = None
    # Imported from the account's history (the contract's backfill): stored like any message, announced to no one.
    history: bool = False

    @field_validator("from_phone", mode="before")
    @classmethod
    def _from_phone(cls, value: object) -> object:
        # A sender's phone is a nice-to-have: an unreadable one is dropped rather than losing the message.
        value = phone_text(value)
        return normalize_phone_or_none(value) if isinstance(value, str) else value

    @field_validator("from_username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        value = (value or "").strip().lstrip("@")
        return value or None

    @model_validator(mode="after")
    def _has_content(self) -> WebhookPayload:
        # A photo without a caption has no text: its file is the content.
        if not (self.text or self.file_url or self.media):
            raise ValueError("text is required when the message has no media or file_url")
        return self

    @property
    def sender_display_name(self) -> str:
        full = " ".join(part for part in (self.from_first_name, self.from_last_name) if part).strip()
        if full:
            return full
        if self.from_username:
            return "@" + self.from_username
        return self.from_phone or f"Telegram {self.from_id}"

    def external_message_id(self, event_id: str | None) -> str | None:
        """The Telegram message id is the dedupe key (the event id when a sender gives only that); without either a
        redelivery cannot be recognised, and two identical texts are two messages."""
        return self.message_id or (f"event:{event_id}" if event_id else None)

    @property
    def telegram_chat_id(self) -> str:
        return self.chat_id or self.from_id

    def preview(self) -> str:
        if self.text:
            return self.text
        if self.media is not None:
            return self.media.preview()
        return self.file_name or "File"


class WebhookResponse(BaseModel):
    success: bool = True
    messageId: str
    clientId: str
    duplicate: bool


async def handle_message(context: EventContext, payload: WebhookPayload) -> dict[str, Any]:
    """`message`: the client's message, its file in chat-media, and the organization's notification."""
    db = context.runtime.db
    context.check_project(payload)
    event_id = context.event_id(payload)
    external_id = payload.external_message_id(event_id)

    # act: the message's file, from crm_server into chat-media; a redelivery of a stored message is answered before
    # the file is fetched again (the replay cache above knows only this process's recent answers)
    stored: StoredFile | None = None
    if payload.media is not None:
        earlier = (await find_by_telegram_key(db, organization_id=context.organization_id,
                                              account_phone=payload.account_phone, chat_id=payload.telegram_chat_id,
                                              external_message_id=external_id)
                   if external_id is not None else None)
        if earlier is not None:
            return message_answer(earlier)
        stored = await context.store_media(payload.media, chat_id=payload.telegram_chat_id,
                                           message_id=external_id or str(uuid4()))

    # store: one round trip checks the integration is still enabled, finds or creates the client, stores the message
    # unless it is a redelivery, and tells the organization about a new one
    result = await ingest_incoming(db, incoming_params(context, payload, event_id, stored))
    return message_answer(result)


def incoming_params(context: EventContext, payload: WebhookPayload, event_id: str | None,
                    stored: StoredFile | None) -> dict[str, Any]:
    """ingest_telegram_webhook's parameters for the message (its file already in chat-media when `stored`)."""
    file_url, file_type, file_name = payload.file_url, payload.file_type, payload.file_name
    file_metadata: dict[str, object] = {}
    if stored is not None:
        # The legacy file_url beside `media` is crm_server's expiring capability: never what the row keeps.
        file_url, file_type, file_name = stored.file_url, stored.file_type, stored.file_name
        file_metadata = stored.metadata
    metadata = {
        "source": "crm_server" if context.signed else "webhook",
        "event_id": event_id,
        "account_phone": payload.account_phone,
        "chat_id": payload.chat_id,
        "telegram_message_id": payload.message_id,
        "history": payload.history or None,
        **file_metadata,
    }
    return {
        "p_organization_id": context.organization_id,
        "p_integration_id": context.integration.id,
        "p_telegram_user_id": payload.from_id,
        "p_message_text": payload.text or "",
        "p_notification_title": f"New Telegram message from {payload.sender_display_name}",
        "p_notification_body": payload.preview()[:NOTIFICATION_PREVIEW_LENGTH],
        "p_external_message_id": payload.external_message_id(event_id),
        "p_telegram_chat_id": payload.telegram_chat_id,
        # With the chat and the message id, the account makes the redelivery key: another account's message 5
        # (a re-pointed integration, another organization) is another message.
        "p_account_phone": payload.account_phone,
        "p_telegram_username": payload.from_username,
        "p_first_name": payload.from_first_name,
        "p_last_name": payload.from_last_name,
        "p_phone": payload.from_phone,
        "p_sent_at": payload.timestamp.isoformat() if payload.timestamp else None,
        "p_file_url": file_url,
        "p_file_type": file_type,
        "p_file_name": file_name,
        "p_metadata": {name: value for name, value in metadata.items() if value is not None},
        "p_notify": not payload.history,
    }


def message_answer(result: IngestResult) -> dict[str, Any]:
    return WebhookResponse(messageId=result.message_id, clientId=result.client_id,
                           duplicate=result.duplicate).model_dump()
