"""The webhook's event types besides `message` (the contract's "Conversation events"): for each `type`, the model
its body must satisfy and the handler that stores it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from functions._shared.event_account_status import AccountStatusEvent, handle_account_status
from functions._shared.event_context import EventContext
from functions._shared.event_deleted import DeletedEvent, handle_deleted
from functions._shared.event_edited import EditedEvent, handle_edited
from functions._shared.event_fields import EventBase
from functions._shared.event_login_alert import LoginAlertEvent, handle_login_alert
from functions._shared.event_outgoing import OutgoingEvent, handle_outgoing
from functions._shared.event_read import ReadEvent, handle_read

MESSAGE = "message"


@dataclass(frozen=True)
class EventType:
    model: type[EventBase]
    handle: Callable[[EventContext, Any], Awaitable[dict[str, Any]]]


EVENT_TYPES: dict[str, EventType] = {
    "message.outgoing": EventType(OutgoingEvent, handle_outgoing),
    "message.edited": EventType(EditedEvent, handle_edited),
    "message.deleted": EventType(DeletedEvent, handle_deleted),
    "message.read": EventType(ReadEvent, handle_read),
    "account.status": EventType(AccountStatusEvent, handle_account_status),
    "account.login_alert": EventType(LoginAlertEvent, handle_login_alert),
}
# What telegram-crm-connect subscribes to: every type this receiver stores.
SUBSCRIBED_TYPES: tuple[str, ...] = (MESSAGE, *EVENT_TYPES)
