"""`MediaPreparer`: gives a media event its file before its lane posts it, and the body with a fresh signed URL.

The outbox row stores the event with a media *hint* (kind, mime type, name, size as Telegram announced them). Right
before the post, the file is downloaded once per event (the record in the store is reused by every retry) and the
body is rendered with `media.url` signed at that moment, so a retry hours later still carries a URL that works.
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from crm_server.media.files import CountingFile, FileTooLarge, MediaFiles, discard
from crm_server.media.links import MediaLinks
from crm_server.store.media import MediaRecord, MediaTable
from crm_server.store.outbox import OutboxRow, encode_payload
from crm_server.webhooks.media_source import MediaRef, MediaSource, MediaTransient, MediaUnavailable

log = logging.getLogger(__name__)

TOO_LARGE = "too_large"
UNAVAILABLE = "unavailable"
# Only rows whose JSON has this key are parsed before their post (a text's quotes are escaped, so never matches).
_MEDIA_KEY = b'"media":{'


@dataclass(frozen=True)
class MediaHint:
    """The file a message carries, as Telegram announces it (stored in the outbox row's payload)."""

    kind: str
    mime_type: str | None
    file_name: str | None
    size: int | None

    def wire(self) -> dict[str, Any]:
        return {"kind": self.kind, "mime_type": self.mime_type, "file_name": self.file_name, "size": self.size}

    @classmethod
    def from_wire(cls, value: dict[str, Any]) -> MediaHint:
        size = value.get("size")
        return cls(kind=str(value.get("kind") or "document"), mime_type=value.get("mime_type"),
                   file_name=value.get("file_name"), size=size if isinstance(size, int) else None)


def _iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class MediaPreparer:
    def __init__(self, source: MediaSource, table: MediaTable, files: MediaFiles, links: MediaLinks, *,
                 max_bytes: int) -> None:
        self._source = source
        self._table = table
        self._files = files
        self._links = links
        self._max_bytes = max_bytes

    @staticmethod
    def carries_media(row: OutboxRow) -> bool:
        """Cheap, on the bytes: most rows are texts and must not pay for a JSON parse before their post."""
        return _MEDIA_KEY in row.body

    async def body_for(self, row: OutboxRow) -> OutboxRow:
        """`row` with the body to post now: unchanged without media; raises MediaTransient when its file cannot be
        had yet (the lane waits and retries)."""
        if _MEDIA_KEY not in row.body:
            return row
        payload = json.loads(row.body)
        hint_wire = payload.get("media")
        if not isinstance(hint_wire, dict):
            return row
        hint = MediaHint.from_wire(hint_wire)
        # The body's message id: an edit's row is keyed by its own (negative) outbox key, not the message's.
        message_id = payload.get("message_id")
        if not isinstance(message_id, int):
            message_id = row.message_id
        ref = MediaRef(event_id=row.event_id, project_id=row.project_id, phone=row.phone,
                       chat_id=int(row.chat_id), message_id=message_id)
        record = await self.prepare(ref, hint)
        payload["media"] = self.media_field(record)
        payload["file_url"] = payload["media"]["url"]
        payload["file_type"] = record.kind
        payload["file_name"] = record.file_name
        return replace(row, body=encode_payload(payload).encode())

    def media_field(self, record: MediaRecord) -> dict[str, Any]:
        field: dict[str, Any] = {
            "kind": record.kind, "mime_type": record.mime_type, "file_name": record.file_name,
            "size": record.size, "sha256": record.sha256, "url": None, "expires_at": None,
        }
        if record.path is not None:
            link = self._links.link(record.media_id)
            field["url"], field["expires_at"] = link.url, _iso(link.expires_at)
        else:
            field["error"] = record.error
        return field

    async def prepare(self, ref: MediaRef, hint: MediaHint) -> MediaRecord:
        """The event's stored media, downloading it first if no earlier attempt did."""
        stored = await self._table.get(ref.event_id)
        if stored is not None:
            return stored
        if hint.size is not None and hint.size > self._max_bytes:
            # Announced too large: not a byte is downloaded.
            return await self._save(ref, hint, error=TOO_LARGE)
        reserved = hint.size or 0
        if not await self._files.reserve(reserved):
            raise MediaTransient("the media folder is full")
        try:
            return await self._download(ref, hint)
        finally:
            # After the save: from then on the table counts the file's bytes.
            self._files.release(reserved)

    async def _download(self, ref: MediaRef, hint: MediaHint) -> MediaRecord:
        path = self._files.new_path()
        try:
            target = CountingFile(path, self._max_bytes)
            try:
                await self._source.download(ref, target)
            finally:
                target.close()
        except FileTooLarge:
            discard(path)
            return await self._save(ref, hint, error=TOO_LARGE)
        except MediaUnavailable:
            discard(path)
            return await self._save(ref, hint, error=UNAVAILABLE)
        except MediaTransient:
            discard(path)
            raise
        except Exception as exc:
            discard(path)
            # Anything unforeseen waits and retries rather than lose the file (the type only: no message texts).
            log.warning("media of %s: download failed (%s)", ref.event_id, type(exc).__name__)
            raise MediaTransient(type(exc).__name__) from None
        return await self._save(ref, hint, path=str(path), size=target.size, sha256=target.sha256)

    async def _save(self, ref: MediaRef, hint: MediaHint, *, error: str | None = None, path: str | None = None,
                    size: int | None = None, sha256: str | None = None) -> MediaRecord:
        record = MediaRecord(
            event_id=ref.event_id, media_id=secrets.token_urlsafe(18), project_id=ref.project_id, phone=ref.phone,
            kind=hint.kind, mime_type=hint.mime_type, file_name=hint.file_name,
            path=path, size=size if size is not None else hint.size, sha256=sha256, error=error,
            created_at=time.time(),
        )
        stored = await self._table.save(record)
        if stored.media_id != record.media_id and path is not None:
            discard(path)  # another attempt stored its download first: keep that one
        return stored
