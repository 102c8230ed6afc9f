"""`DeliveredRecorder`: posted rows of every lane, recorded as delivered in one write a few times a second.

One UPDATE per post would cost the worker one store round trip per message; until a row is recorded it keeps its
lease, so no worker takes it again, and a new run of its chat skips it (`unrecorded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from crm_server.store.outbox import Lane, OutboxTable

log = logging.getLogger(__name__)

# Backoff while the store refuses to record delivered rows: they keep their lease meanwhile.
RECORD_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)


class DeliveredRecorder:
    def __init__(self, outbox: OutboxTable, every_seconds: float, on_recorded: Callable[[], None]) -> None:
        self._outbox = outbox
        self._every_seconds = every_seconds
        self._on_recorded = on_recorded  # after each successful write
        self._delivered: list[tuple[Lane, int, int]] = []  # (lane, row id, status) posted, not recorded yet
        # Per chat, rows posted and being recorded: a new run of the chat skips them instead of waiting for the write.
        self._unrecorded: dict[Lane, set[int]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, lane: Lane, row_id: int, status: int) -> None:
        self._delivered.append((lane, row_id, status))
        self._unrecorded.setdefault(lane, set()).add(row_id)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._record_soon(), name="outbox-delivered")

    def unrecorded(self, lane: Lane) -> set[int]:
        """The lane's rows posted but not recorded yet (a copy)."""
        return set(self._unrecorded.get(lane, ()))

    def unrecorded_of(self, project_id: str, phone: str) -> set[int]:
        """Every row of the account posted but not recorded yet."""
        return {row_id for lane, ids in self._unrecorded.items()
                if lane.project_id == project_id and lane.phone == phone for row_id in ids}

    async def stop(self) -> None:
        """Record what is pending now, once; what fails is posted again after the restart."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._record(self._take())

    def _take(self) -> list[tuple[Lane, int, int]]:
        taken, self._delivered = self._delivered, []
        return taken

    async def _record_soon(self) -> None:
        attempt = 0
        while self._delivered:
            await asyncio.sleep(self._every_seconds)
            batch = self._take()
            try:
                await self._record(batch)
            except asyncio.CancelledError:
                self._delivered = batch + self._delivered
                raise
            except Exception as exc:
                self._delivered = batch + self._delivered
                delay = RECORD_RETRY_SECONDS[min(attempt, len(RECORD_RETRY_SECONDS) - 1)]
                attempt += 1
                log.warning("recording delivered webhooks failed (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            for lane, row_id, _ in batch:
                ids = self._unrecorded.get(lane)
                if ids is not None:
                    ids.discard(row_id)
                    if not ids:
                        del self._unrecorded[lane]
            self._on_recorded()

    async def _record(self, batch: list[tuple[Lane, int, int]]) -> None:
        by_status: dict[int, list[int]] = {}
        for _, row_id, status in batch:
            by_status.setdefault(status, []).append(row_id)
        now = time.time()
        for status, ids in by_status.items():
            await self._outbox.mark_delivered(ids, status, now)
