"""`IncomingMessage`: an incoming private Telegram message as crm_server forwards it, free of Telethon types.

It owns the webhook payload of the contract and the event id, which is derived from the message itself so the
same Telegram message always gets the same `webhook-id`, however often it is re-fetched or redelivered.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Any

from crm_server.store.outbox import OutboxEvent
from crm_server.webhooks.media_payload import MediaHint


@dataclass(frozen=True)
class IncomingMessage:
    project_id: str
    account_phone: str
    chat_id: int
    message_id: int
    from_id: int
    from_username: str | None
    from_first_name: str | None
    from_last_name: str | None
    from_phone: str | None  # E.164 when Telegram shows it to the account
    text: str
    date: datetime.datetime
    # Media that is not a file (contact, location, poll): its type only, as the original plan had it.
    file_type: str | None = None
    file_name: str | None = None
    # A file: its hint is stored; the worker downloads it and adds `url`, `sha256`… right before each post.
    media: MediaHint | None = None
    # Imported from the chat's history (POST /telegram/history/import), not pushed live: the receiver stores it
    # without notifying. The event id stays the message's, so a live event and its history twin are one.
    history: bool = False

    @property
    def event_id(self) -> str:
        identity = f"{self.project_id}:{self.account_phone}:{self.chat_id}:{self.message_id}"
        return "evt_" + hashlib.sha256(identity.encode()).hexdigest()[:32]

    def payload(self) -> dict[str, Any]:
        timestamp = self.date.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        body: dict[str, Any] = {
            "type": "message",
            "event_id": self.event_id,
            "project_id": self.project_id,
            "account_phone": self.account_phone,
            "from_id": self.from_id,
            "from_username": self.from_username,
            "from_first_name": self.from_first_name,
            "from_last_name": self.from_last_name,
            "from_phone": self.from_phone,
            "chat_id": self.chat_id,
            "message_id": self.message_id,
            "text": self.text,
            "timestamp": timestamp,
        }
        if self.media is not None:
            body["media"] = self.media.wire()
            body["file_url"] = None
            body["file_type"] = self.media.kind
            body["file_name"] = self.media.file_name
        elif self.file_type is not None:
            body["file_type"] = self.file_type
            body["file_name"] = self.file_name
        if self.history:
            body["history"] = True
        return body

    def outbox_event(self) -> OutboxEvent:
        return OutboxEvent(
            event_id=self.event_id,
            project_id=self.project_id,
            phone=self.account_phone,
            chat_id=str(self.chat_id),
            message_id=self.message_id,
            payload=self.payload(),
            known_message=True,
        )
