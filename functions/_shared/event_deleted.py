"""`message.deleted`: the rows get `deleted_at` (never removed). Telegram names no chat for a private chat's
deletion: with `chat_id: null` the ids are matched in every chat of the account (ids are unique per account).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import Field

from functions._shared.event_context import EventContext
from functions._shared.event_fields import EventBase, TelegramId
from functions._shared.event_rpc import event_rpc

# Telegram deletes at most 100 messages per request; a sender's batch of a few such requests is still one event.
MAX_DELETED_IDS = 1000


class DeletedEvent(EventBase):
    message_ids: list[TelegramId] = Field(min_length=1, max_length=MAX_DELETED_IDS)


RPC = "apply_telegram_deletion"


def deleted_params(context: EventContext, event: DeletedEvent) -> dict[str, Any]:
    deleted_at = event.timestamp or datetime.now(timezone.utc)
    return {
        "p_organization_id": context.organization_id,
        "p_integration_id": context.integration.id,
        "p_account_phone": event.account_phone,
        "p_telegram_chat_id": event.chat_id,
        "p_external_message_ids": event.message_ids,
        "p_deleted_at": deleted_at.isoformat(),
    }


def deleted_answer(result: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "deleted": result.get("deleted", 0), "pending": result.get("pending", 0)}


async def handle_deleted(context: EventContext, event: DeletedEvent) -> dict[str, Any]:
    result = await event_rpc(context.runtime.db, RPC, deleted_params(context, event), "storing the deletion")
    return deleted_answer(result)
