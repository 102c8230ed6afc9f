"""`OutgoingFiles`: fetches the `file_url` of `POST /telegram/send` into a private temporary file, guarded.

The URL comes from the caller, so crm_server must not become its way into the network behind it: the address is
checked and pinned exactly as webhook URLs are (crm_server.outbound_addresses, with its own allowlist
CRM_PRIVATE_MEDIA_HOSTS), redirects are followed only after the same check, and the body is streamed to disk and
abandoned as soon as it grows past CRM_MEDIA_MAX_BYTES.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from crm_server import errors
from crm_server.media.files import CountingFile, FileTooLarge, discard
from crm_server.media.serving import safe_file_name
from crm_server.outbound_addresses import DeliveryTarget, DeliveryTargets, WebhookAddressRefused
from safeguards.private_files import make_private_dir

FIELD = "file_url"
MAX_REDIRECTS = 3
# The whole fetch, however the host trickles its bytes (httpx's timeouts are per read): 50 MB at 1 MB/s fits.
FETCH_SECONDS = 120.0
CHUNK = 64 * 1024
# The extension Telethon needs to treat a file as what it is (it decides photo / video by the name).
DEFAULT_EXTENSIONS = {"photo": ".jpg", "voice": ".ogg", "video": ".mp4", "audio": ".mp3", "document": ""}


@dataclass(frozen=True)
class OutgoingFile:
    """A fetched file ready for upload: Telethon-free, the Telegram wing decides how it is sent."""

    path: Path
    kind: str  # photo, document, voice, video, audio
    file_name: str
    mime_type: str | None
    size: int
    sha256: str

    def discard(self) -> None:
        discard(self.path)


def _name_from(url: str, mime_type: str | None, kind: str) -> str:
    stem = PurePosixPath(unquote(urlsplit(url).path)).name
    if stem:
        return stem
    extension = (mimetypes.guess_extension(mime_type or "") or DEFAULT_EXTENSIONS.get(kind, ""))
    return f"{kind}{extension}"


class OutgoingFiles:
    def __init__(self, folder: Path, targets: DeliveryTargets, *, max_bytes: int,
                 client: Callable[[], httpx.AsyncClient]) -> None:
        self._folder = folder
        self._targets = targets
        self._max_bytes = max_bytes
        self._client = client

    async def fetch(self, url: str, *, kind: str, file_name: str | None) -> OutgoingFile:
        """The file at `url`, on disk; FileTooLargeError or FileUnavailableError naming `file_url` otherwise."""
        make_private_dir(self._folder)
        try:
            async with asyncio.timeout(FETCH_SECONDS):
                return await self._fetch(url, kind, file_name)
        except TimeoutError:
            raise errors.FileUnavailableError("Fetching the file took too long", field=FIELD) from None
        except httpx.HTTPError as exc:
            # The type only: the exception's text may carry the address.
            raise errors.FileUnavailableError(f"Fetching the file failed ({type(exc).__name__})",
                                              field=FIELD) from None

    async def _fetch(self, url: str, kind: str, file_name: str | None) -> OutgoingFile:
        async with self._client() as http:
            for _ in range(MAX_REDIRECTS + 1):
                target = await self._checked(url)
                async with http.stream("GET", target.url, headers=target.headers,
                                       extensions=target.extensions or None) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise errors.FileUnavailableError(
                            f"Fetching the file answered HTTP {response.status_code}", field=FIELD)
                    return await self._save(url, response, kind, file_name)
        raise errors.FileUnavailableError("Fetching the file was redirected too often", field=FIELD)

    async def _checked(self, url: str) -> DeliveryTarget:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise errors.ValidationError("`file_url` must be an http:// or https:// URL", field=FIELD)
        try:
            return await self._targets.target(url)
        except WebhookAddressRefused:
            # Said without the address: the caller learns only that this host is not fetched.
            raise errors.FileUnavailableError(
                "Files from private, loopback or link-local addresses are not fetched", field=FIELD) from None

    async def _save(self, url: str, response: httpx.Response, kind: str, file_name: str | None) -> OutgoingFile:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise errors.FileTooLargeError(field=FIELD)  # refused on its word, before a byte is read
        mime_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower() or None
        if mime_type == "application/octet-stream":
            mime_type = None
        name = safe_file_name(file_name or _name_from(url, mime_type, kind), fallback=kind)
        suffix = os.path.splitext(name)[1] or DEFAULT_EXTENSIONS.get(kind, "")
        if kind == "photo" and not (mimetypes.guess_type("x" + suffix)[0] or "").startswith("image/"):
            suffix = ".jpg"  # Telethon sends a file as a photo only by an image extension
        path = self._folder / (os.urandom(16).hex() + suffix)
        target = CountingFile(path, self._max_bytes)
        try:
            try:
                async for chunk in response.aiter_bytes(CHUNK):
                    target.write(chunk)
            finally:
                target.close()
        except FileTooLarge:
            discard(path)
            raise errors.FileTooLargeError(field=FIELD) from None
        except httpx.HTTPError as exc:
            discard(path)
            raise errors.FileUnavailableError(f"Fetching the file failed ({type(exc).__name__})",
                                              field=FIELD) from None
        return OutgoingFile(path=path, kind=kind, file_name=name,
                            mime_type=mime_type or mimetypes.guess_type(name)[0],
                            size=target.size, sha256=target.sha256)
