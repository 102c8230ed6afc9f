"""The simulated Telegram's records as the world hands them out (users, messages, other updates), the SQL columns
they are read from, and what a connected session must take: shared by the world, its watcher and the renderer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

USER_COLUMNS = "id, phone, username, first_name, last_name, privacy_restricted"
MESSAGE_COLUMNS = ("account_id, id, peer_id, out, text, date, pts, media_kind, media_url, media_name, media_file_id,"
                   " edit_date")
# The kinds of `other_updates` rows, as Telegram names the updates they become (see render.other_update).
EDIT, DELETE, READ_OUTBOX, READ_INBOX = "edit", "delete", "read_outbox", "read_inbox"


@dataclass(frozen=True, slots=True)
class SimUser:
    """A simulated Telegram user; every account is one too. `phone` is digits only, as Telegram sends it."""

    id: int
    phone: str
    username: str | None
    first_name: str
    last_name: str | None
    privacy_restricted: bool


@dataclass(frozen=True, slots=True)
class SimMedia:
    """An attachment: an external URL (`url`, kind "photo" or "document"), or a stored file (`file_id`, in
    `world.files`; `kind` is then one of media.KINDS). `name` when known."""

    kind: str
    url: str | None = None
    name: str | None = None
    file_id: int | None = None


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message in one account's log (each side of a chat has its own copy, id and pts)."""

    account_id: int
    id: int
    peer_id: int
    out: bool
    text: str
    date: int
    pts: int
    media: SimMedia | None = None
    edit_date: int | None = None


@dataclass(frozen=True, slots=True)
class SimUpdate:
    """One update of an account's log that is not a new message: `kind` (EDIT, DELETE, READ_*) and its data
    (`message_id`/`text`/`edit_date`, `message_ids`, `peer_id`/`max_id`), with the pts it moved the account to."""

    account_id: int
    pts: int
    pts_count: int
    kind: str
    data: dict
    date: int


class UpdateListener(Protocol):
    """A connected session of an account (a sandbox sender); the world tells it what Telegram would push.
    `key_id` is its auth key: the watcher (live.py) sees a termination written by another process through it."""

    key_id: int

    def on_new_message(self, message: SimMessage, peer: SimUser, peer_known: bool) -> None: ...

    def on_other_update(self, update: SimUpdate) -> None: ...

    def on_revoked(self) -> None: ...

    def on_dropped(self) -> None: ...


def update_from_row(row: tuple) -> SimUpdate:
    """An `other_updates` row: account_id, pts, pts_count, kind, data (JSON), date."""
    return SimUpdate(account_id=row[0], pts=row[1], pts_count=row[2], kind=row[3], data=json.loads(row[4]),
                     date=row[5])


def user_from_row(row: tuple) -> SimUser:
    """A `users` row read with USER_COLUMNS."""
    return SimUser(
        id=row[0], phone=row[1], username=row[2], first_name=row[3], last_name=row[4], privacy_restricted=bool(row[5])
    )


def message_from_row(row: tuple) -> SimMessage:
    """A `messages` row read with MESSAGE_COLUMNS."""
    media = SimMedia(kind=row[7], url=row[8], name=row[9], file_id=row[10]) if row[7] else None
    return SimMessage(
        account_id=row[0],
        id=row[1],
        peer_id=row[2],
        out=bool(row[3]),
        text=row[4],
        date=row[5],
        pts=row[6],
        media=media,
        edit_date=row[11],
    )
