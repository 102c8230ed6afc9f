"""`account.login_alert`: Telegram's service user told the account about a new login. The organization gets a
notification (device and place when known); the event has no text and no code, and nothing enters chat_messages.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import Field

from functions._shared.event_context import EventContext, present
from functions._shared.event_fields import EventBase
from functions._shared.event_rpc import event_rpc

TITLES = {
    "login_code": "A login code was sent to the Telegram account {phone}",
    "new_login": "New login to the Telegram account {phone}",
}
DEFAULT_TITLE = TITLES["new_login"]


class LoginAlertEvent(EventBase):
    # crm_server: "login_code" (a code was asked for) or "new_login" (a device logged in); others read as the latter.
    alert: str | None = Field(None, max_length=50)
    device: str | None = Field(None, max_length=200)
    location: str | None = Field(None, max_length=200)

    @property
    def title(self) -> str:
        return TITLES.get(self.alert or "", DEFAULT_TITLE).format(phone=self.account_phone)


RPC = "record_telegram_login_alert"


def login_alert_params(context: EventContext, event: LoginAlertEvent) -> dict[str, Any]:
    # The event's id makes a redelivery one notification; an unsigned sender without ids cannot be deduped.
    event_id = context.event_id(event) or str(uuid.uuid4())
    body = " · ".join(part for part in (event.device, event.location) if part) or None
    return {
        "p_organization_id": context.organization_id,
        "p_integration_id": context.integration.id,
        "p_event_id": event_id,
        "p_title": event.title,
        "p_body": body,
        "p_data": present({"accountPhone": event.account_phone, "alert": event.alert, "device": event.device,
                           "location": event.location}),
    }


def login_alert_answer(result: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "notificationId": result.get("notification_id"),
            "duplicate": bool(result.get("duplicate"))}


async def handle_login_alert(context: EventContext, event: LoginAlertEvent) -> dict[str, Any]:
    result = await event_rpc(context.runtime.db, RPC, login_alert_params(context, event), "storing the login alert")
    return login_alert_answer(result)
