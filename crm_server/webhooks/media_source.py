"""`MediaSource`: where the delivery wing gets an incoming message's file from (the Telegram wing implements it).

Defined here so the webhook wing never imports Telegram code; crm_server.telegram.media_download implements it and
app.py wires the two together. Its errors say what the lane does next: wait and retry, or deliver without the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from crm_server.media.files import CountingFile


@dataclass(frozen=True)
class MediaRef:
    """Which message's file, as the outbox row knows it."""

    event_id: str
    project_id: str
    phone: str
    chat_id: int
    message_id: int


class MediaTransient(Exception):
    """Not now (the account is not connected, the network failed, the disk budget is full): the lane retries later
    with its backoff; the event is never a dead letter for it."""


class MediaUnavailable(Exception):
    """Telegram refused the file for good (deleted, expired beyond re-fetching): delivered with `error: unavailable`."""


class MediaSource(Protocol):
    async def download(self, ref: MediaRef, into: CountingFile) -> None:
        """Write the message's file into `into` (streamed). Raises MediaTransient, MediaUnavailable, or FileTooLarge
        (from `into.write`) when the file is bigger than announced and over the limit."""
        ...
