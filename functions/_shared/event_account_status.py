"""`account.status`: the account's state as crm_server reports it (authorized, logged_out, ...) and why, kept on the
integration (account_state, account_state_reason, account_state_at) for telegram-crm-status; the newest wins.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import Field

from functions._shared.event_context import EventContext
from functions._shared.event_fields import EventBase
from functions._shared.event_rpc import event_rpc


class AccountStatusEvent(EventBase):
    state: str = Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_.:-]+$")
    reason: str | None = Field(None, max_length=500)


RPC = "record_telegram_account_status"


def account_status_params(context: EventContext, event: AccountStatusEvent) -> dict[str, Any]:
    return {
        "p_organization_id": context.organization_id,
        "p_integration_id": context.integration.id,
        "p_state": event.state,
        "p_reason": event.reason,
        "p_at": (event.timestamp or datetime.now(timezone.utc)).isoformat(),
    }


def account_status_answer(result: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "applied": bool(result.get("applied"))}


async def handle_account_status(context: EventContext, event: AccountStatusEvent) -> dict[str, Any]:
    result = await event_rpc(context.runtime.db, RPC, account_status_params(context, event),
                             "storing the account's state")
    return account_status_answer(result)
