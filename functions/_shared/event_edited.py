"""`message.edited`: the row's text becomes the edit's, the text it replaces is kept in `metadata.edits`; the newest
edit wins, and an edit that overtook its message waits for it (in the database: apply_telegram_edit).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import field_validator

from functions._shared.event_context import EventContext
from functions._shared.event_fields import EventBase, TelegramId, utc
from functions._shared.event_rpc import event_rpc
from functions._shared.media import IncomingMedia


class EditedEvent(EventBase):
    chat_id: TelegramId  # type: ignore[assignment]  # an edit always names its chat
    message_id: TelegramId
    text: str | None = None
    # An edited file is not fetched again: the row keeps the file it first had (the text is what an edit changes).
    media: IncomingMedia | None = None
    edit_date: datetime | None = None
    outgoing: bool = False

    @field_validator("edit_date")
    @classmethod
    def _aware_edit_date(cls, value: datetime | None) -> datetime | None:
        return utc(value)

    @property
    def edited_at(self) -> datetime:
        # crm_server always sends edit_date; a sender that does not is taken at its word about "now".
        return self.edit_date or self.timestamp or datetime.now(timezone.utc)


RPC = "apply_telegram_edit"


def edited_params(context: EventContext, event: EditedEvent) -> dict[str, Any]:
    return {
        "p_organization_id": context.organization_id,
        "p_integration_id": context.integration.id,
        "p_account_phone": event.account_phone,
        "p_telegram_chat_id": event.chat_id,
        "p_external_message_id": event.message_id,
        "p_message_text": event.text or "",
        "p_edit_date": event.edited_at.isoformat(),
    }


def edited_answer(result: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "status": result.get("status"), "messageId": result.get("message_id"),
            "duplicate": result.get("status") == "duplicate"}


async def handle_edited(context: EventContext, event: EditedEvent) -> dict[str, Any]:
    result = await event_rpc(context.runtime.db, RPC, edited_params(context, event), "storing the edit")
    return edited_answer(result)
