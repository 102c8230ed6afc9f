"""`IncomingListener`: writes the accounts' events (incoming messages first of all) to the outbox in group commits,
then wakes the delivery worker; types nobody subscribed to are dropped before (webhooks.subscriptions).

Telethon hands us one message at a time (sequential_updates) and reads the next update only when the handler
returned. Awaiting one INSERT + COMMIT per message capped an account at the store's round-trip rate (~45 msg/s with
SQLite sharing its one connection with the delivery worker). So the handler only appends to a buffer and returns;
a writer task inserts everything buffered in one transaction. Durability moves from the handler to the update
state: the Telegram wing asks `when_stored` to record an update state, and the listener records it only once every
message handed over before that moment is committed. A crash loses at most the buffer, and the saved state is still
behind it, so catch-up fetches those messages again (the outbox's unique key drops any that did land).

Each batch goes to one intake, the delivery worker (`accept`): a chat whose lane is open there gets its rows
inserted already leased to it and handed over in memory after the commit, so the worker posts them without reading
the outbox. The worker alone owns lanes, leases and runs; the listener only writes as told.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from crm_server.store.outbox import Lane, OutboxEvent, OutboxRow, OutboxTable
from crm_server.webhooks.events import MESSAGE, WebhookEvent
from crm_server.webhooks.subscriptions import Subscriptions

log = logging.getLogger(__name__)

# Backoff while the store refuses a write (locked, restarting): the buffer waits, nothing is dropped.
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)
# Rows per INSERT: SQLite allows 32,766 bound parameters and an outbox row binds 10.
BATCH_ROWS = 500
# Past this many unwritten messages the handler waits for the writer: Telethon stops reading updates (they stay on
# Telegram's side, fetched later) instead of our memory growing while the store is down.
MAX_BUFFERED = 5000


class Handover(Protocol):
    """One batch on its way into the outbox, as its intake wants it written and told about."""

    def leases(self) -> Mapping[Lane, tuple[str, float]]:
        """Lane → (owner, lease end): those lanes' rows are inserted already leased (asked at each attempt)."""
        ...

    def committed(self, rows: list[OutboxRow]) -> None:
        """The batch is committed; `rows` are its new rows (a redelivered message is not)."""
        ...


class Intake(Protocol):
    """Who takes what the listener commits: the delivery worker (crm_server.webhooks.worker.WebhookDelivery)."""

    def accept(self, batch: Sequence[OutboxEvent]) -> Handover: ...


class PollingIntake:
    """An intake with no lanes held open: new rows wait in the outbox, and `wake` tells whoever polls it."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def accept(self, batch: Sequence[OutboxEvent]) -> Handover:
        return self

    def leases(self) -> Mapping[Lane, tuple[str, float]]:
        return {}

    def committed(self, rows: list[OutboxRow]) -> None:
        if rows:
            self._wake()


class IncomingListener:
    def __init__(self, outbox: OutboxTable, intake: Intake,
                 on_enqueued: Callable[[int], None] | None = None,
                 subscriptions: Subscriptions | None = None) -> None:
        self._outbox = outbox
        # Events of other types than `message` nobody subscribed to are dropped here (None: all are enqueued).
        self._subscriptions = subscriptions
        self._intake = intake
        self._on_enqueued = on_enqueued
        self._buffer: list[OutboxEvent] = []
        self._handed = 0  # messages handed to us since start
        self._stored = 0  # of those, committed to the outbox (always a prefix: written in order)
        self._waiting: deque[tuple[int, object, Callable[[], None]]] = deque()  # (handed, owner, record state)
        self._writer: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._room.set()

    async def __call__(self, message: WebhookEvent) -> None:
        event = message.outbox_event()
        event_type = event.payload.get("type", MESSAGE)
        if (self._subscriptions is not None and event_type != MESSAGE
                and not await self._subscriptions.wants(event.project_id, event.phone, event_type)):
            return
        self._buffer.append(event)
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
            handover = self._intake.accept(batch)
            rows = await self._insert(batch, handover)
            del self._buffer[:len(batch)]
            handover.committed(rows)
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

    async def _insert(self, batch: list[OutboxEvent], handover: Handover) -> list[OutboxRow]:
        attempt = 0
        while True:
            try:
                return await self._outbox.insert(batch, handover.leases())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                # Type only: the exception text may quote the payload (a client's message).
                log.warning("outbox write failed (%s); retrying in %.2fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
