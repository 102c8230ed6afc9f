"""`WalCheckpointer`: moves the SQLite store's write-ahead log into the database file from a connection of its own,
so no commit of the server's one store connection pays for it.

SQLite checkpoints a WAL itself, by default in the commit that takes the log past 1,000 pages: that commit copies
the log into the database file and syncs it (even at `synchronous=NORMAL`). The server writes through one
connection that every store call queues for (crm_server.store.database), so that commit held up the outbox's group
commit and everything behind it. In the paced inbound bench (1,450 msg/s, ~4 MB of log a second) it was the tail of
the group commit: its COMMIT took 6.4 ms at p90 and 13.6 ms at p99 (stage timestamps per message), 2.9 / 3.9 ms
with the writer's checkpoints turned off, and 1.6 ms at p90 with this checkpointer.

Here a PASSIVE checkpoint runs every `every_seconds` in a worker thread: it copies what it can without waiting for
any lock and never blocks the writer or readers. The writer keeps an automatic checkpoint at `WRITER_PAGES`
(crm_server.store.database) as a safety net, should this thread fall behind or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

# The store connection's own automatic checkpoint while this runs: ten times SQLite's default (~40 MB of log).
WRITER_PAGES = 10_000
EVERY_SECONDS = 0.5


class WalCheckpointer:
    def __init__(self, path: Path, every_seconds: float = EVERY_SECONDS) -> None:
        self._path = path
        self._every_seconds = every_seconds
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.checkpoints = 0  # taken so far (tests)

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-wal-checkpoints")

    async def stop(self) -> None:
        """Stop after the checkpoint under way, if any (a cancelled task would leave its thread running on the
        connection that is closed next)."""
        if self._task is not None:
            self._stopping.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for, which can drop a cancellation (crm_server.webhooks.worker `_run`).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every_seconds):
                    await self._stopping.wait()
                    return
            try:
                await asyncio.to_thread(self._checkpoint)
            except sqlite3.Error as exc:
                # The writer's own automatic checkpoint still bounds the log; the type only, as every store log.
                log.warning("store checkpoint failed (%s); retrying", type(exc).__name__)
                db, self._db = self._db, None
                if db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        db.close()

    def _checkpoint(self) -> None:
        if self._db is None:
            # timeout 0: a PASSIVE checkpoint waits for nothing, and neither should opening its connection.
            self._db = sqlite3.connect(self._path, timeout=0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self.checkpoints += 1
