"""The file of an incoming message, from crm_server into chat-media: whether to fetch it at all (a trust decision),
the fetch, the upload, and what the message row keeps about it (file_url, file_type, file_name, metadata).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from functions._shared.chat_media import BUCKET, ChatMediaStore
from functions._shared.errors import MediaTooLargeForStorageError
from functions._shared.media import IncomingMedia, MediaUnavailable
from functions._shared.media_fetch import fetched_media, same_origin
from functions._shared.media_names import incoming_object_path, safe_file_name

log = logging.getLogger("functions.incoming_media")

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
# Types a browser runs when Storage serves them from the project's own origin: a sender's HTML or SVG would script
# the CRM's pages. Stored as octet-stream instead (downloaded, never rendered); the row still says what it was.
ACTIVE_CONTENT_TYPES = frozenset({
    "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml", "text/xsl",
    "text/javascript", "application/javascript", "application/x-shockwave-flash"})


@dataclass(frozen=True)
class StoredFile:
    """What the message row keeps about its file; `file_url` None when the file is not stored (metadata says why)."""

    file_url: str | None
    file_type: str
    file_name: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaLimits:
    max_bytes: int
    fetch_timeout_seconds: float


def unavailable_reason(media: IncomingMedia, crm_api_url: str | None, limits: MediaLimits,
                       now: datetime) -> MediaUnavailable | None:
    """Why the file is not fetched, or None to fetch it. None of these is an error: the message is stored without
    its file, with a 200, so that crm_server does not retry what a retry cannot change."""
    reason = media.unavailable
    if reason is not None:
        return reason
    assert media.url is not None
    # Trust: the URL is a capability on the integration's own crm_server. A signed event pointing anywhere else is
    # forged or the server is compromised; fetching it would make us the attacker's HTTP client (SSRF), so it is
    # never fetched, whatever the transport would allow.
    if not crm_api_url or not same_origin(media.url, crm_api_url):
        log.warning("an event's media.url is not on the integration's crm_server; the file is not fetched")
        return MediaUnavailable.FOREIGN_URL
    if media.size is not None and media.size > limits.max_bytes:
        return MediaUnavailable.TOO_LARGE
    if media.expires_at is not None and media.expires_at <= now:
        return MediaUnavailable.EXPIRED
    return None


async def store_incoming_file(http: httpx.AsyncClient, store: ChatMediaStore, media: IncomingMedia, *,
                              crm_api_url: str | None, organization_id: str, integration_id: str, chat_id: str,
                              message_id: str, limits: MediaLimits, now: datetime) -> StoredFile:
    """Fetch the file from crm_server and upload it to chat-media, or say why not.

    `http` must be the runtime's crm_http (the SSRF-checked transport). A failed fetch, a size or sha256 mismatch
    and a failed upload raise 5xx errors (crm_server delivers the event again); nothing is stored then.
    """
    safe_name = safe_file_name(media.file_name, media.mime_type, media.kind)
    # The row shows the sender's own name; the object path uses the safe one (an unnamed photo: `photo.jpg`).
    file_name = media.file_name or safe_name
    described: dict[str, Any] = {"kind": media.kind.value, "mime_type": media.mime_type, "size": media.size,
                                 "sha256": media.sha256}
    reason = unavailable_reason(media, crm_api_url, limits, now)
    if reason is not None:
        return StoredFile(None, media.kind.value, file_name,
                          {"media": {**_present(described), "unavailable": reason.value}})
    assert media.url is not None
    path = incoming_object_path(organization_id, integration_id, chat_id, message_id, safe_name)
    try:
        async with fetched_media(http, media.url, max_bytes=limits.max_bytes, expected_size=media.size,
                                 expected_sha256=media.sha256, timeout=limits.fetch_timeout_seconds) as fetched:
            url = await store.upload(path, fetched.path, stored_content_type(media.mime_type))
    except MediaTooLargeForStorageError:
        # Storage's own limit is below ours: the same refusal on every retry, so the message goes in without it.
        return StoredFile(None, media.kind.value, file_name,
                          {"media": {**_present(described), "unavailable": MediaUnavailable.TOO_LARGE.value}})
    described.update(size=fetched.size, sha256=fetched.sha256)
    return StoredFile(url, media.kind.value, file_name,
                      {"media": {**_present(described), "bucket": BUCKET, "path": path}})


def stored_content_type(mime_type: str | None) -> str:
    """The Content-Type the object is stored with: the sender's, unless malformed or active content."""
    mime = (mime_type or "").split(";", 1)[0].strip().lower()
    if not MIME_TYPE.fullmatch(mime) or mime in ACTIVE_CONTENT_TYPES:
        return DEFAULT_CONTENT_TYPE
    return mime


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}
