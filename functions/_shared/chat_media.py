"""The `chat-media` bucket of Supabase Storage through supabase-py's storage client (service role): uploading an
incoming message's file, the URL a row keeps for an object, a chat-media object named by a URL, and signed URLs.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
from storage3.exceptions import StorageApiError
from storage3.utils import StorageException
from supabase import AsyncClient

from functions._shared.errors import (
    FileNotFoundInStorageError,
    FileTooLargeForSandboxError,
    MediaStoreFailedError,
    MediaTooLargeForStorageError,
    ValidationFailedError,
)

log = logging.getLogger("functions.chat_media")

BUCKET = "chat-media"
# How a URL of this project names an object (`/storage/v1/object/<how>/chat-media/<path>`); `object/chat-media/...`
# itself is the service role's own download route.
OBJECT_ROUTES = ("authenticated", "public", "sign")
MAX_OBJECT_PATH_LENGTH = 1000
STORAGE_ERRORS = (StorageException, httpx.HTTPError)


class ChatMediaStore:
    """chat-media for the functions. `public` (FUNCTIONS_MEDIA_PUBLIC): the bucket is made public on first use and
    rows keep public URLs, as the original system did; else it stays private and rows keep the authenticated URL,
    which the organization's users read through RLS."""

    def __init__(self, db: AsyncClient, supabase_url: str, *, public: bool) -> None:
        self._db = db
        self._object_base = f"{supabase_url.rstrip('/')}/storage/v1/object"
        self._public = public
        self._made_public = False
        self._lock = asyncio.Lock()

    def object_url(self, path: str) -> str:
        """The URL a chat_messages row keeps for an object: no capability in it, only the object's address."""
        return f"{self._object_base}/{'public' if self._public else 'authenticated'}/{BUCKET}/{path}"

    async def upload(self, path: str, file: Path, content_type: str) -> str:
        """Store `file` at `path` (upsert: a redelivery writes the same object again) and return its URL."""
        await self._ensure_public()
        try:
            with file.open("rb") as stream:
                await self._db.storage.from_(BUCKET).upload(
                    path, stream, file_options={"content-type": content_type, "upsert": "true"})
        except StorageApiError as exc:
            if _status(exc) == 413:
                raise MediaTooLargeForStorageError() from exc
            log.warning("uploading a chat-media object failed: %s %s", exc.status, exc.code)
            raise MediaStoreFailedError() from exc
        except STORAGE_ERRORS as exc:
            log.warning("uploading a chat-media object failed: %r", exc)
            raise MediaStoreFailedError() from exc
        return self.object_url(path)

    async def signed_url(self, path: str, expires_in: int) -> str:
        """A URL that reads the object for `expires_in` seconds without a key (what crm_server downloads)."""
        try:
            answer = await self._db.storage.from_(BUCKET).create_signed_url(path, expires_in)
        except StorageApiError as exc:
            if _status(exc) in (400, 404):
                # Supabase Storage answers a missing object 400 (older) or 404 "not_found"
                raise FileNotFoundInStorageError() from exc
            log.warning("signing a chat-media object failed: %s %s", exc.status, exc.code)
            raise MediaStoreFailedError() from exc
        except STORAGE_ERRORS as exc:
            log.warning("signing a chat-media object failed: %r", exc)
            raise MediaStoreFailedError() from exc
        signed = answer.get("signedURL") or answer.get("signedUrl")
        if not signed:
            raise MediaStoreFailedError("Storage answered without a signed URL")
        return str(signed)

    async def read(self, path: str, max_bytes: int) -> bytes:
        """An object's bytes, whole (the sandbox demo hands them on as base64; nothing else reads files into memory).
        Over `max_bytes` is refused before it is read."""
        bucket = self._db.storage.from_(BUCKET)
        try:
            size = int((await bucket.info(path)).get("size") or 0)
            if size > max_bytes:
                raise FileTooLargeForSandboxError(
                    f"fileUrl: the file is larger than the sandbox takes ({max_bytes} bytes)", field="fileUrl")
            return await bucket.download(path)
        except StorageApiError as exc:
            if _status(exc) in (400, 404):
                raise FileNotFoundInStorageError() from exc
            log.warning("reading a chat-media object failed: %s %s", exc.status, exc.code)
            raise MediaStoreFailedError() from exc
        except STORAGE_ERRORS as exc:
            log.warning("reading a chat-media object failed: %r", exc)
            raise MediaStoreFailedError() from exc

    def object_path(self, file_url: str) -> str | None:
        """The chat-media path `file_url` names, when it names one of this project's objects (a Storage URL
        `<SUPABASE_URL>/storage/v1/object/(authenticated|public|sign)/chat-media/<path>`, or a bare
        `chat-media/<path>`); None for any other URL. A path that could leave its folder is refused (422)."""
        value = file_url.strip()
        if value.startswith(f"{BUCKET}/"):
            return _checked_path(value.removeprefix(f"{BUCKET}/"))
        parts, base = urlsplit(value), urlsplit(self._object_base)
        if (parts.scheme, parts.netloc.lower()) != (base.scheme, base.netloc.lower()):
            return None
        for route in OBJECT_ROUTES:
            prefix = f"{base.path}/{route}/{BUCKET}/"
            if parts.path.startswith(prefix):
                return _checked_path(parts.path.removeprefix(prefix))
        return None

    async def _ensure_public(self) -> None:
        if not self._public or self._made_public:
            return
        async with self._lock:
            if self._made_public:
                return
            try:
                await self._db.storage.update_bucket(BUCKET, {"public": True})
            except STORAGE_ERRORS as exc:
                log.warning("making chat-media public failed: %r", exc)
                raise MediaStoreFailedError() from exc
            self._made_public = True


def _checked_path(raw: str) -> str:
    """An object path as Storage names it (percent-decoded), refusing what could name another folder: `.` and `..`
    segments, empty segments, backslashes and control characters."""
    path = unquote(raw)
    segments = path.split("/")
    if (not path or len(path) > MAX_OBJECT_PATH_LENGTH or "\\" in path or not path.isprintable()
            or any(segment in ("", ".", "..") for segment in segments)):
        raise ValidationFailedError("fileUrl: not a valid chat-media object path", field="fileUrl")
    return path


def _status(error: StorageApiError) -> int | None:
    try:
        return int(str(error.status))
    except ValueError:
        return None
