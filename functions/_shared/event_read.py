"""`message.read`: outbox (the client read the account's messages up to max_id) makes outgoing rows `read`;
inbox (the account read the client's, from any app) makes incoming rows read. Rows stored later below the mark
are read when they arrive (the database keeps the mark).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from functions._shared.event_context import EventContext
from functions._shared.event_fields import EventBase, TelegramId
from functions._shared.event_rpc import event_rpc

MAX_MESSAGE_ID = 2**63 - 1


class ReadEvent(EventBase):
    chat_id: TelegramId  # type: ignore[assignment]  # a read is always of one chat
    max_id: TelegramId
    direction: Literal["outbox", "inbox"]

    @field_validator("max_id")
    @classmethod
    def _positive(cls, value: str) -> str:
        # Telegram's message ids are positive; the database compares them as bigint.
        if not 0 < int(value) <= MAX_MESSAGE_ID:
            raise ValueError("must be a positive Telegram message id")
        return value


RPC = "apply_telegram_read"


def read_params(context: EventContext, event: ReadEvent) -> dict[str, Any]:
    return {
        "p_organization_id": context.organization_id,
        "p_integration_id": context.integration.id,
        "p_account_phone": event.account_phone,
        "p_telegram_chat_id": event.chat_id,
        "p_direction": event.direction,
        "p_max_id": int(event.max_id),
    }


def read_answer(result: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "updated": result.get("updated", 0)}


async def handle_read(context: EventContext, event: ReadEvent) -> dict[str, Any]:
    result = await event_rpc(context.runtime.db, RPC, read_params(context, event), "storing the read status")
    return read_answer(result)
