"""`MediaFiles`: the folder `<state-dir>/media/` where downloaded files wait for their receiver, with its budget.

Files are written 0600 through `CountingFile` (size counted and hashed while written, never held whole in memory),
removed RETENTION after their event was delivered by `sweep`, and the disk they may use is bounded: to make room the
files delivered longest ago go first; when that is not enough the download waits (`reserve` says no).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO

from crm_server.store.media import MediaRecord, MediaTable
from safeguards.private_files import PRIVATE_FILE_MODE, make_private_dir

# Files evicted per look at the oldest delivered ones when making room.
EVICT_BATCH = 50
# A file whose event is gone from the outbox (registration removed) is kept this long after it was made anyway:
# its event may still be on its way into the outbox (the listener commits in batches).
ORPHAN_GRACE_SECONDS = 3600.0


class FileTooLarge(Exception):
    """More bytes came than the limit allows: the download is abandoned."""


class CountingFile:
    """A write-only 0600 file that hashes and counts what is written, and refuses to grow past `limit`."""

    def __init__(self, path: Path, limit: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._limit = limit
        self.size = 0
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.size > self._limit:
            raise FileTooLarge(self.size)
        self._hash.update(chunk)
        return self._file.write(chunk)

    def restart(self) -> None:
        """Empty it for a second try from the first byte."""
        self._file.seek(0)
        self._file.truncate()
        self.size = 0
        self._hash = hashlib.sha256()

    def tell(self) -> int:  # Telethon reports progress by it
        return self.size

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class MediaFiles:
    def __init__(self, folder: Path, table: MediaTable, *, max_disk_bytes: int, retention_seconds: float) -> None:
        self.folder = folder
        self._table = table
        self._max_disk = max_disk_bytes
        self._retention = retention_seconds
        # Bytes promised to downloads in flight (they are not in the table yet).
        self._reserved = 0

    def new_path(self, suffix: str = "") -> Path:
        """A fresh file name (random: a name never says whose message it holds)."""
        make_private_dir(self.folder)
        return self.folder / (secrets.token_hex(16) + suffix)

    async def reserve(self, size: int) -> bool:
        """Promise `size` bytes to a download, making room by removing delivered files; False: no room now."""
        while True:
            used = await self._table.disk_used() + self._reserved
            if used + size <= self._max_disk:
                self._reserved += size
                return True
            await self._table.note_deliveries()
            oldest = await self._table.oldest_delivered(EVICT_BATCH)
            if not oldest:
                return False
            # Only as many as make room: a delivered file is still useful to a receiver fetching it late.
            going, freed = [], 0
            for record in oldest:
                going.append(record)
                freed += record.size or 0
                if used - freed + size <= self._max_disk:
                    break
            await self._remove(going)

    def release(self, size: int) -> None:
        """The download that reserved `size` is stored (its size is in the table now) or abandoned."""
        self._reserved = max(0, self._reserved - size)

    async def sweep(self, now: float) -> int:
        """Remove the files delivered more than the retention ago (and orphans); returns how many went."""
        await self._table.note_deliveries()
        expired = await self._table.expired(now - self._retention, now - max(self._retention, ORPHAN_GRACE_SECONDS))
        await self._remove(expired)
        return len(expired)

    async def _remove(self, records: list[MediaRecord]) -> None:
        for record in records:
            if record.path:
                discard(Path(record.path))
        await self._table.forget([record.event_id for record in records])


def discard(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
