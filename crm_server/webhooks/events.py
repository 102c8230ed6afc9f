"""The conversation events besides an incoming message (`message.outgoing`, `.edited`, `.deleted`, `.read`,
`account.status`, `account.login_alert`), free of Telethon types; each owns its webhook body and event id.

Event ids are derived from the Telegram fact itself (an edit's includes its edit_date), so a fact fetched again or
redelivered always gets the same `webhook-id`. Every body starts with `type` (see `event_type_of`).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from crm_server.store.outbox import OutboxEvent
from crm_server.webhooks.media_payload import MediaHint

MESSAGE = "message"
MESSAGE_OUTGOING = "message.outgoing"
MESSAGE_EDITED = "message.edited"
MESSAGE_DELETED = "message.deleted"
MESSAGE_READ = "message.read"
ACCOUNT_STATUS = "account.status"
ACCOUNT_LOGIN_ALERT = "account.login_alert"
EVENT_TYPES = (MESSAGE, MESSAGE_OUTGOING, MESSAGE_EDITED, MESSAGE_DELETED, MESSAGE_READ, ACCOUNT_STATUS,
               ACCOUNT_LOGIN_ALERT)
# What a registration receives when it did not choose (a receiver of the original plan knows only messages).
DEFAULT_EVENT_TYPES = (MESSAGE,)

# Lanes (per-chat order) of events without a chat: deletions whose chat is unknown, and the account's own events.
UNRESOLVED_LANE = "deleted"
ACCOUNT_LANE = "account"

_TYPE_PREFIX = b'{"type":"'


class WebhookEvent(Protocol):
    """What the listener writes to the outbox: any event value of this module, or an IncomingMessage."""

    def outbox_event(self) -> OutboxEvent: ...


def event_type_of(body: bytes) -> str:
    """The type of a stored webhook body, read from its first key (bodies stored before types existed: message)."""
    if not body.startswith(_TYPE_PREFIX):
        return MESSAGE
    end = body.find(b'"', len(_TYPE_PREFIX))
    return body[len(_TYPE_PREFIX):end].decode() if end > 0 else MESSAGE


def event_id(*identity: object) -> str:
    return "evt_" + hashlib.sha256(":".join(str(part) for part in identity).encode()).hexdigest()[:32]


def outbox_key(event: str) -> int:
    """The outbox's per-chat key of an event that is no new message: negative, so it never meets a Telegram
    message id (the outbox is unique on chat and message id), and derived from the event id, so a redelivered
    fact is dropped by the same unique key."""
    return -int(event.removeprefix("evt_")[:15], 16) - 1


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _with_media(body: dict[str, Any], media: MediaHint | None) -> dict[str, Any]:
    if media is not None:
        # The hint; the worker downloads the file and puts `url`, `sha256`… in right before each post.
        body["media"] = media.wire()
        body["file_url"] = None
        body["file_type"] = media.kind
        body["file_name"] = media.file_name
    return body


@dataclass(frozen=True)
class OutgoingMessage:
    """The account wrote from another device or app (not through `/telegram/send`)."""

    project_id: str
    account_phone: str
    chat_id: int
    message_id: int
    text: str
    date: datetime.datetime
    media: MediaHint | None = None
    history: bool = False  # imported from the chat's history (see IncomingMessage.history)

    @property
    def event_id(self) -> str:
        # The same identity as an incoming message's: a chat's message ids are unique, whoever wrote them.
        return event_id(self.project_id, self.account_phone, self.chat_id, self.message_id)

    def payload(self) -> dict[str, Any]:
        body = _with_media({
            "type": MESSAGE_OUTGOING, "event_id": self.event_id, "project_id": self.project_id,
            "account_phone": self.account_phone, "chat_id": self.chat_id, "message_id": self.message_id,
            "to_id": self.chat_id, "text": self.text, "timestamp": iso(self.date),
        }, self.media)
        if self.history:
            body["history"] = True
        return body

    def outbox_event(self) -> OutboxEvent:
        return OutboxEvent(event_id=self.event_id, project_id=self.project_id, phone=self.account_phone,
                           chat_id=str(self.chat_id), message_id=self.message_id, payload=self.payload(),
                           known_message=True)


@dataclass(frozen=True)
class EditedMessage:
    """A message of a private chat was edited (by the client, or by the account from anywhere)."""

    project_id: str
    account_phone: str
    chat_id: int
    message_id: int
    text: str
    edit_date: datetime.datetime
    outgoing: bool
    media: MediaHint | None = None

    @property
    def event_id(self) -> str:
        # Each edit is its own fact: the same message edited twice is two events, the same edit fetched twice one.
        return event_id(self.project_id, self.account_phone, self.chat_id, self.message_id, "edited",
                        int(self.edit_date.timestamp()))

    def payload(self) -> dict[str, Any]:
        return _with_media({
            "type": MESSAGE_EDITED, "event_id": self.event_id, "project_id": self.project_id,
            "account_phone": self.account_phone, "chat_id": self.chat_id, "message_id": self.message_id,
            "text": self.text, "edit_date": iso(self.edit_date), "outgoing": self.outgoing,
            "timestamp": iso(self.edit_date),
        }, self.media)

    def outbox_event(self) -> OutboxEvent:
        return OutboxEvent(event_id=self.event_id, project_id=self.project_id, phone=self.account_phone,
                           chat_id=str(self.chat_id), message_id=outbox_key(self.event_id), payload=self.payload())


@dataclass(frozen=True)
class DeletedMessages:
    """Messages of one chat were deleted; `chat_id` None when crm_server never delivered them (Telegram names no
    chat for private-chat deletions)."""

    project_id: str
    account_phone: str
    chat_id: int | None
    message_ids: tuple[int, ...]
    date: datetime.datetime

    @property
    def event_id(self) -> str:
        ids = ",".join(str(i) for i in sorted(self.message_ids))
        return event_id(self.project_id, self.account_phone, self.chat_id, "deleted", ids)

    def payload(self) -> dict[str, Any]:
        return {
            "type": MESSAGE_DELETED, "event_id": self.event_id, "project_id": self.project_id,
            "account_phone": self.account_phone, "chat_id": self.chat_id,
            "message_ids": sorted(self.message_ids), "timestamp": iso(self.date),
        }

    def outbox_event(self) -> OutboxEvent:
        lane = str(self.chat_id) if self.chat_id is not None else UNRESOLVED_LANE
        return OutboxEvent(event_id=self.event_id, project_id=self.project_id, phone=self.account_phone,
                           chat_id=lane, message_id=outbox_key(self.event_id), payload=self.payload())


@dataclass(frozen=True)
class MessagesRead:
    """A read receipt: `outbox` — the client read the account's messages up to `max_id`; `inbox` — the account
    read the client's (from another device, or through `/telegram/read`)."""

    project_id: str
    account_phone: str
    chat_id: int
    max_id: int
    direction: str  # "outbox" | "inbox"
    date: datetime.datetime

    @property
    def event_id(self) -> str:
        return event_id(self.project_id, self.account_phone, self.chat_id, "read", self.direction, self.max_id)

    def payload(self) -> dict[str, Any]:
        return {
            "type": MESSAGE_READ, "event_id": self.event_id, "project_id": self.project_id,
            "account_phone": self.account_phone, "chat_id": self.chat_id, "max_id": self.max_id,
            "direction": self.direction, "timestamp": iso(self.date),
        }

    def outbox_event(self) -> OutboxEvent:
        return OutboxEvent(event_id=self.event_id, project_id=self.project_id, phone=self.account_phone,
                           chat_id=str(self.chat_id), message_id=outbox_key(self.event_id), payload=self.payload())


@dataclass(frozen=True)
class AccountStatusChanged:
    """The account's login changed: `state` authorized | logged_out, `reason` login | logout | revoked."""

    project_id: str
    account_phone: str
    state: str
    reason: str
    date: datetime.datetime

    @property
    def event_id(self) -> str:
        # A state change is a fact of its moment: logging in again later is a new event.
        return event_id(self.project_id, self.account_phone, "status", self.state, self.reason,
                        self.date.timestamp())

    def payload(self) -> dict[str, Any]:
        return {
            "type": ACCOUNT_STATUS, "event_id": self.event_id, "project_id": self.project_id,
            "account_phone": self.account_phone, "chat_id": None, "state": self.state, "reason": self.reason,
            "timestamp": iso(self.date),
        }

    def outbox_event(self) -> OutboxEvent:
        return OutboxEvent(event_id=self.event_id, project_id=self.project_id, phone=self.account_phone,
                           chat_id=ACCOUNT_LANE, message_id=outbox_key(self.event_id), payload=self.payload())


@dataclass(frozen=True)
class LoginAlert:
    """Telegram's service user told the account of a login (a code sent, or a new device): what it names of the
    device and place, never its text or a code."""

    project_id: str
    account_phone: str
    notice_id: int  # the service message's id in the account's chat with 777000
    alert: str  # "login_code" | "new_login"
    device: str | None
    location: str | None
    date: datetime.datetime

    @property
    def event_id(self) -> str:
        return event_id(self.project_id, self.account_phone, "login_alert", self.notice_id)

    def payload(self) -> dict[str, Any]:
        return {
            "type": ACCOUNT_LOGIN_ALERT, "event_id": self.event_id, "project_id": self.project_id,
            "account_phone": self.account_phone, "chat_id": None, "alert": self.alert, "device": self.device,
            "location": self.location, "timestamp": iso(self.date),
        }

    def outbox_event(self) -> OutboxEvent:
        return OutboxEvent(event_id=self.event_id, project_id=self.project_id, phone=self.account_phone,
                           chat_id=ACCOUNT_LANE, message_id=outbox_key(self.event_id), payload=self.payload())
