"""`IncomingListener`: writes incoming messages to the outbox in group commits, then wakes the delivery worker.

Telethon hands us one message at a time (sequential_updates) and reads the next update only when the handler
returned. Awaiting one INSERT + COMMIT per message capped an account at the store's round-trip rate (~45 msg/s with
SQLite sharing its one connection with the delivery worker). So the handler only appends to a buffer and returns;
a writer task inserts everything buffered in one transaction. Durability moves from the handler to the update
state: the AccountManager asks `when_stored` to record an update state, and the listener records it only once every
message handed over before that moment is committed. A crash loses at most the buffer, and the saved state is still
behind it, so catch-up fetches those messages again (the outbox's unique key drops any that did land).

With a `feed` (the delivery worker), a chat whose lane is open there gets its rows inserted already leased to it
and handed over in memory after the commit: the worker posts them without reading the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from crm_server.webhooks.worker import LaneRun
from crm_server.webhooks.incoming import IncomingMessage
from crm_server.store.outbox import Lane, OutboxEvent, OutboxRow, OutboxTable

log = logging.getLogger(__name__)

# Backoff while the store refuses a write (locked, restarting): the buffer waits, nothing is dropped.
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
# Rows per INSERT: SQLite allows 32,766 bound parameters and an outbox row binds 10.
BATCH_ROWS = 500
# Past this many unwritten messages the handler waits for the writer: Telethon stops reading updates (they stay on
# Telegram's side, fetched later) instead of our memory growing while the store is down.
MAX_BUFFERED = 5000


class LaneFeed(Protocol):
    """What the listener needs of the delivery worker (crm_server.webhooks.worker.WebhookDelivery)."""

    @property
    def owner(self) -> str: ...

    def claim(self, lane: Lane, rows: int) -> LaneRun | None: ...

    def hand_over(self, run: LaneRun, rows: list[OutboxRow], claimed: int) -> None: ...

    def enqueued(self, lanes: set[Lane]) -> None: ...


class IncomingListener:
    def __init__(self, outbox: OutboxTable, wake: Callable[[], None],
                 on_enqueued: Callable[[int], None] | None = None, feed: LaneFeed | None = None) -> None:
        self._outbox = outbox
        self._wake = wake
        self._feed = feed
        self._on_enqueued = on_enqueued
        self._buffer: list[OutboxEvent] = []
        self._handed = 0  # messages handed to us since start
        self._stored = 0  # of those, committed to the outbox (always a prefix: written in order)
        self._waiting: deque[tuple[int, object, Callable[[], None]]] = deque()  # (handed, owner, record state)
        self._writer: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()

    async def __call__(self, message: IncomingMessage) -> None:
        self._buffer.append(message.outbox_event())
        self._handed += 1
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="outbox-writer")
        if len(self._buffer) >= MAX_BUFFERED:
            self._room.clear()
            await self._room.wait()

    def when_stored(self, owner: object, record: Callable[[], None]) -> None:
        """Run `record` once every message handed over so far is in the outbox (now, if it already is).

        `owner` (an account) keeps one pending record per account at each point: a newer one for the same point
        replaces the older, so an account whose updates carry no messages does not grow the queue.
        """
        if self._stored >= self._handed:
            record()
            return
        if self._waiting and self._waiting[-1][0] == self._handed and self._waiting[-1][1] is owner:
            self._waiting.pop()
        self._waiting.append((self._handed, owner, record))

    async def drain(self) -> None:
        """Wait until everything handed over is written (shutdown: before the store closes)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while self._buffer:
            batch = self._buffer[:BATCH_ROWS]
            claims = self._claim(batch)
            rows = await self._insert(batch, claims)
            del self._buffer[:len(batch)]
            unclaimed = self._hand_over(rows, claims)
            self._stored += len(batch)
            if len(self._buffer) < MAX_BUFFERED:
                self._room.set()
            while self._waiting and self._waiting[0][0] <= self._stored:
                _, _, record = self._waiting.popleft()
                try:
                    record()
                except Exception:  # one account's bookkeeping must not stop the writer
                    log.exception("recording an update state failed")
            if self._on_enqueued is not None:
                self._on_enqueued(len(rows))
            if unclaimed:
                if self._feed is not None:
                    self._feed.enqueued(unclaimed)
                else:
                    self._wake()

    def _claim(self, batch: list[OutboxEvent]) -> dict[Lane, tuple[LaneRun, int]]:
        """Per chat of the batch: the open run that takes all its rows, and how many that is."""
        if self._feed is None:
            return {}
        counts: dict[Lane, int] = {}
        for event in batch:
            counts[event.lane] = counts.get(event.lane, 0) + 1
        claims = {}
        for lane, count in counts.items():
            run = self._feed.claim(lane, count)
            if run is not None:
                claims[lane] = (run, count)
        return claims

    def _hand_over(self, rows: list[OutboxRow], claims: dict[Lane, tuple[LaneRun, int]]) -> set[Lane]:
        """Give the open runs their committed rows; returns the chats with new rows no run took."""
        by_lane: dict[Lane, list[OutboxRow]] = {lane: [] for lane in claims}
        unclaimed: set[Lane] = set()
        for row in rows:
            if row.lane in by_lane:
                by_lane[row.lane].append(row)
            else:
                unclaimed.add(row.lane)
        if self._feed is not None:  # (without one there are no claims)
            for lane, (run, claimed) in claims.items():
                self._feed.hand_over(run, by_lane[lane], claimed)
        return unclaimed

    async def _insert(self, batch: list[OutboxEvent], claims: dict[Lane, tuple[LaneRun, int]]) -> list[OutboxRow]:
        owner = self._feed.owner if self._feed is not None else ""  # (without a feed there are no claims)
        attempt = 0
        while True:
            # Lease terms are read at each attempt: a lane extends its lease while a failing store holds us up.
            leases = {lane: (owner, run.lease_until) for lane, (run, _) in claims.items()}
            try:
                return await self._outbox.insert(batch, leases)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                # Type only: the exception text may quote the payload (a client's message).
                log.warning("outbox write failed (%s); retrying in %.2fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
