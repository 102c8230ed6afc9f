"""The webhook's event types besides `message` (the contract's "Conversation events"): for each `type`, the model
its body must satisfy and the handler that stores it; and, for the types a batch applies one by one inside its rpc
(event_batch), the rpc that stores one, its parameters and the answer made of its result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from functions._shared import event_account_status, event_deleted, event_edited, event_login_alert, event_read
from functions._shared.event_account_status import AccountStatusEvent, handle_account_status
from functions._shared.errors import ValidationFailedError
from functions._shared.event_context import EventContext
from functions._shared.event_deleted import DeletedEvent, handle_deleted
from functions._shared.event_edited import EditedEvent, handle_edited
from functions._shared.event_fields import EventBase
from functions._shared.event_login_alert import LoginAlertEvent, handle_login_alert
from functions._shared.event_outgoing import OutgoingEvent, handle_outgoing
from functions._shared.event_read import ReadEvent, handle_read

MESSAGE = "message"
OUTGOING = "message.outgoing"
MAX_TYPE_LENGTH = 100


@dataclass(frozen=True)
class StoredByRpc:
    """How one event of the type is stored by its own rpc: `params` are the rpc's, `answer` is made of its result."""

    rpc: str
    params: Callable[[EventContext, Any], dict[str, Any]]
    answer: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class EventType:
    model: type[EventBase]
    handle: Callable[[EventContext, Any], Awaitable[dict[str, Any]]]
    # None for message.outgoing: a message kind, which a batch stores set-based with `message` (event_batch).
    stored_by: StoredByRpc | None = None


EVENT_TYPES: dict[str, EventType] = {
    OUTGOING: EventType(OutgoingEvent, handle_outgoing),
    "message.edited": EventType(EditedEvent, handle_edited, StoredByRpc(
        event_edited.RPC, event_edited.edited_params, event_edited.edited_answer)),
    "message.deleted": EventType(DeletedEvent, handle_deleted, StoredByRpc(
        event_deleted.RPC, event_deleted.deleted_params, event_deleted.deleted_answer)),
    "message.read": EventType(ReadEvent, handle_read, StoredByRpc(
        event_read.RPC, event_read.read_params, event_read.read_answer)),
    "account.status": EventType(AccountStatusEvent, handle_account_status, StoredByRpc(
        event_account_status.RPC, event_account_status.account_status_params,
        event_account_status.account_status_answer)),
    "account.login_alert": EventType(LoginAlertEvent, handle_login_alert, StoredByRpc(
        event_login_alert.RPC, event_login_alert.login_alert_params, event_login_alert.login_alert_answer)),
}
# What telegram-crm-connect subscribes to: every type this receiver stores.
SUBSCRIBED_TYPES: tuple[str, ...] = (MESSAGE, *EVENT_TYPES)


def event_type_of(data: dict[str, Any]) -> str:
    """The body's `type` (absent: a message, as every sender of the original plan posts)."""
    kind = data.get("type")
    if kind is None or kind == "":
        return MESSAGE
    if not isinstance(kind, str) or len(kind) > MAX_TYPE_LENGTH:
        raise ValidationFailedError("type must be an event type (a string)", field="type")
    return kind
