"""The bytes of objects on disk under `<state-dir>/storage/`: one immutable file per object version, 0600.

Files are named by version (a fresh uuid per write), never by the object's name, so no key can reach outside the
folder and a write never touches bytes a reader may be streaming; rows name versions, and a file a row does not
(yet) name is not an object. A write lands in `tmp/` and is renamed to its version once complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from safeguards.private_files import PRIVATE_FILE_MODE, make_private_dir

CHUNK_BYTES = 256 * 1024
# A pending file this old belongs to no upload still running (a crash left it): removed when a store opens.
STALE_PENDING_SECONDS = 24 * 3600


@dataclass
class PendingFile:
    """Bytes being received: counted and hashed as they arrive, in a temporary file until `FileStore.keep`."""

    path: Path
    handle: int
    size: int = 0
    md5: hashlib._Hash | None = None  # type: ignore[name-defined]

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            written = os.write(self.handle, view)
            view = view[written:]
        self.size += len(chunk)
        assert self.md5 is not None
        self.md5.update(chunk)

    @property
    def etag(self) -> str:
        assert self.md5 is not None
        # S3's ETag of a single-part object: the quoted MD5 of its bytes (an identifier, not a security hash).
        return f'"{self.md5.hexdigest()}"'


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._objects = root / "objects"
        make_private_dir(root)
        make_private_dir(self._tmp)
        make_private_dir(self._objects)
        self._remove_stale_pending()

    def _remove_stale_pending(self) -> None:
        # Only old ones: another process serving the same folder may be receiving into a fresh one right now.
        cutoff = time.time() - STALE_PENDING_SECONDS
        for path in self._tmp.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def path_of(self, version: str) -> Path:
        parsed = uuid.UUID(version)  # a version is always a uuid: the only file names this store makes
        return self._objects / parsed.hex[:2] / parsed.hex

    def begin(self) -> PendingFile:
        path = self._tmp / f"{uuid.uuid4().hex}.part"
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        return PendingFile(path, handle, md5=hashlib.md5(usedforsecurity=False))

    def keep(self, pending: PendingFile) -> str:
        """The complete file made a version (fsynced, then renamed within the store): returns the version."""
        os.fsync(pending.handle)
        os.close(pending.handle)
        pending.handle = -1
        version = str(uuid.uuid4())
        target = self.path_of(version)
        make_private_dir(target.parent)
        os.replace(pending.path, target)
        return version

    def discard(self, pending: PendingFile) -> None:
        if pending.handle >= 0:
            with contextlib.suppress(OSError):
                os.close(pending.handle)
            pending.handle = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pending.path)

    def copy(self, version: str) -> str:
        """A new version with the same bytes: a hard link, as versions are never written to once kept."""
        new_version = str(uuid.uuid4())
        target = self.path_of(new_version)
        make_private_dir(target.parent)
        os.link(self.path_of(version), target)
        return new_version

    def remove(self, *versions: str | None) -> None:
        for version in versions:
            if version:
                with contextlib.suppress(FileNotFoundError, ValueError):
                    os.unlink(self.path_of(version))

    def open(self, version: str) -> int:
        """An open descriptor of the version's bytes; FileNotFoundError when it is gone (replaced meanwhile)."""
        return os.open(self.path_of(version), os.O_RDONLY)


async def stream_file(handle: int, size: int, offset: int = 0) -> AsyncIterator[bytes]:
    """`size` bytes of an open file from `offset`, read in a worker thread chunk by chunk; the descriptor is closed
    at the end."""
    try:
        if offset:
            os.lseek(handle, offset, os.SEEK_SET)
        remaining = size
        while remaining > 0:
            chunk = await anyio.to_thread.run_sync(os.read, handle, min(CHUNK_BYTES, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        os.close(handle)
