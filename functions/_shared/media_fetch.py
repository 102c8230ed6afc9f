"""Fetching an incoming message's file from crm_server's signed `media.url`: only from the integration's own server,
through the SSRF-checked transport, streamed to a private temporary file under a size cap, then checked against
the event's size and SHA-256.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx

from functions._shared.crm_addresses import DEFAULT_PORTS, AddressRefused
from functions._shared.errors import MediaFetchFailedError, MediaMismatchError

log = logging.getLogger("functions.media_fetch")

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class FetchedFile:
    path: Path
    size: int
    sha256: str


def same_origin(url: str, base_url: str) -> bool:
    """Whether `url` is on the server at `base_url` (scheme, host and port equal; the default port spelled or
    not). Userinfo in `url` is refused: it could make a reader see one host where the request goes to another."""
    try:
        given, base = urlsplit(url), urlsplit(base_url)
        given_port = given.port or DEFAULT_PORTS.get(given.scheme)
        base_port = base.port or DEFAULT_PORTS.get(base.scheme)
    except ValueError:  # a port that is not a number
        return False
    if given.scheme not in DEFAULT_PORTS or given.username is not None or given.password is not None:
        return False
    return (given.scheme, (given.hostname or "").rstrip("."), given_port) == \
        (base.scheme, (base.hostname or "").rstrip("."), base_port) and bool(given.hostname)


@contextlib.asynccontextmanager
async def fetched_media(http: httpx.AsyncClient, url: str, *, max_bytes: int, expected_size: int | None,
                        expected_sha256: str | None, timeout: float) -> AsyncIterator[FetchedFile]:
    """The file at `url`, in a temporary file (mode 0600) removed when the block ends.

    At most `max_bytes` (and never more than `expected_size`) are read: a longer answer is cut off as a mismatch,
    whatever its Content-Length said. Raises MediaFetchFailedError or MediaMismatchError (both 5xx: crm_server
    delivers the event again).
    """
    limit = max_bytes if expected_size is None else min(max_bytes, expected_size)
    descriptor, name = tempfile.mkstemp(prefix="tgcrm-media-")  # mkstemp: 0600, owned by this process
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            size, digest = await _download(http, url, file, limit=limit, timeout=timeout)
        if expected_size is not None and size != expected_size:
            raise MediaMismatchError(f"The fetched file has {size} bytes; the event said {expected_size}")
        if expected_sha256 is not None and not hmac.compare_digest(digest, expected_sha256):
            raise MediaMismatchError("The fetched file's sha256 is not the event's")
        yield FetchedFile(path, size, digest)
    finally:
        path.unlink(missing_ok=True)


async def _download(http: httpx.AsyncClient, url: str, file: BinaryIO, *, limit: int,
                    timeout: float) -> tuple[int, str]:
    shown = _without_query(url)  # the query is the capability: never in a log
    try:
        # `timeout` bounds the whole transfer (httpx's own bounds each read): a server that trickles stays bounded.
        async with asyncio.timeout(timeout):
            return await _stream(http, url, file, limit=limit, timeout=timeout, shown=shown)
    except TimeoutError as exc:
        log.warning("fetching media %s took longer than %.0f s", shown, timeout)
        raise MediaFetchFailedError() from exc


async def _stream(http: httpx.AsyncClient, url: str, file: BinaryIO, *, limit: int, timeout: float,
                  shown: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    try:
        # identity: the digest is of the file itself, and a compressed answer cannot hide its size from the cap.
        async with http.stream("GET", url, timeout=timeout, headers={"Accept-Encoding": "identity"}) as response:
            if response.status_code != 200:
                log.warning("fetching media %s answered %d", shown, response.status_code)
                raise MediaFetchFailedError()
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise MediaMismatchError(f"The file is {declared} bytes, more than the {limit} expected")
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise MediaMismatchError(f"The file is longer than the {limit} bytes expected")
                digest.update(chunk)
                file.write(chunk)
    except AddressRefused as exc:
        log.warning("fetching media %s refused: %s", shown, exc)
        raise MediaFetchFailedError() from exc
    except httpx.HTTPError as exc:
        log.warning("fetching media %s failed: %r", shown, exc)
        raise MediaFetchFailedError() from exc
    return size, digest.hexdigest()


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
