"""`MediaServing`: what `GET /media/{id}` hands out: the file behind a valid link, with headers safe to serve.

A file's name and MIME type come from whoever sent the message; they are reduced here to what cannot break a header
or turn crm_server's origin into a web page of the sender's (an attachment, never sniffed, sandboxed).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from crm_server import errors
from crm_server.media.links import MediaLinks
from crm_server.store.media import MediaTable

_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|;]+')


def safe_mime_type(value: str | None) -> str:
    value = (value or "").strip().lower()
    return value if _MIME.fullmatch(value) else "application/octet-stream"


def safe_file_name(value: str | None, fallback: str = "file") -> str:
    """A name with no path, quotes, separators or control characters, at most 128 characters, never empty."""
    name = unicodedata.normalize("NFC", value or "")
    name = _UNSAFE_NAME.sub("_", name).strip(" ._")
    return name[:128] or fallback


@dataclass(frozen=True)
class ServedFile:
    path: Path
    mime_type: str
    file_name: str
    sha256: str


class FileOnOtherInstance(Exception):
    """The file was downloaded by another instance sharing the store: that one serves it. `here` is the same file
    when this instance can read it too (a shared disk), served when the other one cannot answer."""

    def __init__(self, instance_id: str, here: ServedFile | None) -> None:
        super().__init__(instance_id)
        self.instance_id = instance_id
        self.here = here


class MediaServing:
    def __init__(self, table: MediaTable, links: MediaLinks, instance_id: str | None = None) -> None:
        self._table = table
        self._links = links
        self._instance_id = instance_id

    async def open(self, media_id: str, expires: str, signature: str) -> ServedFile:
        if not self._links.valid(media_id, expires, signature):
            raise errors.MediaLinkInvalidError(field="signature")
        record = await self._table.by_media_id(media_id)
        here = None
        if record is not None and record.path is not None and Path(record.path).is_file():
            here = ServedFile(path=Path(record.path), mime_type=safe_mime_type(record.mime_type),
                              file_name=safe_file_name(record.file_name, fallback=record.kind),
                              sha256=record.sha256 or "")
        if record is not None and record.path is not None and record.instance_id not in (None, self._instance_id):
            raise FileOnOtherInstance(record.instance_id, here)
        if here is None:
            raise errors.MediaNotFoundError()
        return here
