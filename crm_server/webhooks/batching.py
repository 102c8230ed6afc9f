"""`BatchAssembler`: the batches of each batched registration, which chat lanes fill with their ready rows; a batch
is due when full, when its registration has no batch on its way ("post when idle"), or at the latest `max_wait_ms`
after its first row; each row's outcome comes back on its own future.

Posting when idle: a registration with nothing in flight gains nothing by waiting (the receiver is free), so its
new batch goes at the end of the event loop's current round (the lanes woken by the same outbox commit have put
their rows in by then); while a batch is on its way the next one fills, and it goes when that one is answered (or
`max_wait_ms` after its first row, whichever comes first). Light load thus pays no `max_wait_ms`, and a loaded
receiver still gets large batches. (bench/inbound.py, 2,000-message burst and 1,000 paced at 492 msg/s, three runs
each alternating with main under the bench lock, together with the outbox insert's cached statement: paced p50
101–423 → 39–57 ms, p99 293–873 → 157–412 ms; burst 870–1,113 → 1,286–1,693 msg/s. The price: about three times
as many batches at that rate, PostgreSQL 0.56–0.92 → 0.89–0.97 ms CPU per paced message.) The contract's
`max_wait_ms` stays the longest a batch waits; it is no longer also the shortest.

At most `in_flight` batches of one registration are on their way at once; a due batch waits for one of them to be
answered and keeps taking rows meanwhile (up to `max_events`), so a slow receiver gets fewer, larger batches instead
of one per `max_wait_ms` and lane group. (bench/inbound.py paced at ~730 msg/s, one run each: p50 85 → 72 ms, p99
322 → 304 ms; the tail lies elsewhere, see the README's figures.)

A batch also closes before its body would pass a byte budget (receivers limit bodies); a receiver answering 413 to a
batch of several events halves the budget for its registration and the events are retried in the smaller batches,
never dead-lettered for the batch's size (a single event it refuses is judged as a single post's 413).

Order per chat holds because a lane puts a chat's rows in a batch in order and waits for their outcomes before
giving it more (a chat is never in two batches at once); batches of different chats may be in flight together.
The assembler knows nothing of the outbox: the lane records what each outcome means."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from crm_server.outbound_addresses import DeliveryTarget
from crm_server.store.outbox import OutboxRow
from crm_server.store.webhooks import WebhookRecord
from crm_server.webhooks.policy import Outcome, RetrySchedule, Verdict, judge_transport_error

log = logging.getLogger(__name__)

# The envelope around the events (`{"batch_id":…,"project_id":…,"account_phone":…,"events":[…]}`) at most.
ENVELOPE_BYTES = 256
TOO_LARGE = 413

RowOutcome = tuple[Outcome, int | None]  # the verdict on a row, and the receiver's status (None: no answer)
# The outcome of rows taken back from a batch before it went (their account was paused or removed): never posted.
WITHDRAWN: RowOutcome = (Outcome(Verdict.RETRY, error="withdrawn"), None)
PostBatch = Callable[[WebhookRecord, DeliveryTarget | None, list[OutboxRow]], Awaitable[list[RowOutcome]]]


@dataclass(eq=False)
class _OpenBatch:
    webhook: WebhookRecord
    target: DeliveryTarget | None  # the address its first lane checked (lanes re-check theirs at every tenure)
    rows: list[OutboxRow] = field(default_factory=list)
    size: int = ENVELOPE_BYTES  # the body's bytes with these rows
    futures: list[asyncio.Future[RowOutcome]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    due: bool = False  # full, or max_wait_ms passed: it goes as soon as the registration has a batch slot


class BatchAssembler:
    def __init__(self, post: PostBatch, schedule: RetrySchedule, max_bytes: int = 256 * 1024,
                 in_flight: int = 2, post_when_idle: bool = True) -> None:
        self._post = post
        self._schedule = schedule
        self._max_bytes = max_bytes
        self._in_flight_limit = in_flight
        # False: a batch waits for max_wait_ms (or to be full) even when nothing of its registration is in flight.
        self._post_when_idle = post_when_idle
        # Registrations whose oldest open batch goes at the end of this loop round, if none is in flight by then.
        self._idle_flush: set[tuple[str, str]] = set()
        # A smaller budget for registrations whose receiver answered 413 to a batch (until this process ends).
        self._learned_bytes: dict[tuple[str, str], int] = {}
        # (project_id, phone) → its batches not yet sent, oldest first; the last one is filled.
        self._queued: dict[tuple[str, str], deque[_OpenBatch]] = {}
        self._in_flight: dict[tuple[str, str], int] = {}
        self._posting: set[asyncio.Task[None]] = set()

    def submit(self, webhook: WebhookRecord, target: DeliveryTarget | None,
               rows: Sequence[OutboxRow]) -> list[asyncio.Future[RowOutcome]]:
        """Put the first rows of `rows` (as many as the filling batch takes, at least one) into the registration's
        batch; their futures, in order. The caller submits the rest once these have their outcomes."""
        assert webhook.batch is not None and rows
        key = (webhook.project_id, webhook.phone)
        queued = self._queued.setdefault(key, deque())
        batch = queued[-1] if queued else None
        if batch is not None and (batch.webhook != webhook or len(batch.rows) >= webhook.batch.max_events
                                  or batch.size + len(rows[0].body) + 1 > self._budget(key)):
            # Full, too large with the next row, or registered anew meanwhile (URL, secret, batching): it goes as
            # it is, the rows start the next one.
            batch.due = True
            batch = None
        if batch is None:
            batch = _OpenBatch(webhook, target)
            queued.append(batch)
            batch.timer = asyncio.get_running_loop().call_later(webhook.batch.max_wait_ms / 1000, self._due, batch)
            if not self._in_flight.get(key):
                self._flush_when_idle(key)
        room = webhook.batch.max_events - len(batch.rows)
        taken: list[OutboxRow] = []
        for row in rows[:room]:
            if (batch.rows or taken) and batch.size + len(row.body) + 1 > self._budget(key):
                break
            taken.append(row)
            batch.size += len(row.body) + 1
        futures = [asyncio.get_running_loop().create_future() for _ in taken]
        batch.rows.extend(taken)
        batch.futures.extend(futures)
        if len(batch.rows) >= webhook.batch.max_events or len(taken) < min(len(rows), room):
            batch.due = True
        self._pump(key)
        return futures

    def _budget(self, key: tuple[str, str]) -> int:
        return min(self._max_bytes, self._learned_bytes.get(key, self._max_bytes))

    def withdraw(self, project_id: str, phone: str) -> None:
        """The account's registration was paused or removed: its batches not yet sent do not go; their rows' outcome
        is WITHDRAWN (a batch already on its way ends, as a single post in flight does)."""
        for batch in self._queued.pop((project_id, phone), ()):
            if batch.timer is not None:
                batch.timer.cancel()
            for future in batch.futures:
                if not future.done():
                    future.set_result(WITHDRAWN)

    def _flush_when_idle(self, key: tuple[str, str]) -> None:
        """Post the registration's oldest open batch at the end of this loop round if it has none in flight then:
        the lanes already woken (by the same commit, or the same answer) put their rows in first."""
        if self._post_when_idle and key not in self._idle_flush:
            self._idle_flush.add(key)
            asyncio.get_running_loop().call_soon(self._idle_due, key)

    def _idle_due(self, key: tuple[str, str]) -> None:
        self._idle_flush.discard(key)
        queued = self._queued.get(key)
        if queued and not self._in_flight.get(key):
            queued[0].due = True
            self._pump(key)

    def _due(self, batch: _OpenBatch) -> None:
        batch.timer = None
        batch.due = True
        self._pump((batch.webhook.project_id, batch.webhook.phone))

    def _pump(self, key: tuple[str, str]) -> None:
        """Send the registration's due batches, oldest first, while it has a free slot."""
        queued = self._queued.get(key)
        while queued and queued[0].due and self._in_flight.get(key, 0) < self._in_flight_limit:
            batch = queued.popleft()
            if batch.timer is not None:
                batch.timer.cancel()
                batch.timer = None
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            task = asyncio.create_task(self._send(batch), name="webhook-batch")
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)
            task.add_done_callback(lambda _task, key=key: self._sent(key))
        if not queued:
            self._queued.pop(key, None)

    def _sent(self, key: tuple[str, str]) -> None:
        self._in_flight[key] -= 1
        if not self._in_flight[key]:
            del self._in_flight[key]
            if self._queued.get(key):
                self._flush_when_idle(key)  # the batch filled meanwhile need not wait out max_wait_ms
        self._pump(key)

    async def _send(self, batch: _OpenBatch) -> None:
        try:
            outcomes = await self._post(batch.webhook, batch.target, batch.rows)
        except asyncio.CancelledError:
            for future in batch.futures:
                future.cancel()
            raise
        except Exception as exc:
            # A fault of ours, not the receiver's: every row retries (none is lost, none counted delivered).
            log.exception("posting a batch of %d events failed", len(batch.rows))
            outcomes = [(judge_transport_error(type(exc).__name__, row.attempts + 1, self._schedule), None)
                        for row in batch.rows]
        if len(batch.rows) > 1 and all(status == TOO_LARGE for _, status in outcomes):
            # The receiver's body limit, not these events' fault: smaller batches from now on, and they are retried.
            key = (batch.webhook.project_id, batch.webhook.phone)
            self._learned_bytes[key] = max(1, (batch.size - ENVELOPE_BYTES) // 2)
            log.warning("batch of %d events (%d bytes) to %s/%s refused as too large; batches of at most %d bytes "
                        "from now on", len(batch.rows), batch.size, key[0], key[1], self._learned_bytes[key])
            outcomes = [(Outcome(Verdict.RETRY, self._schedule.delay(1), "HTTP 413: batch split"), TOO_LARGE)
                        for _ in batch.rows]
        for future, outcome in zip(batch.futures, outcomes, strict=True):
            if not future.done():  # its lane stopped waiting (shutdown): nobody records it, it is re-sent
                future.set_result(outcome)

    async def aclose(self) -> None:
        """Stop: batches not yet sent are dropped (their lanes give the rows back), batches on their way cancelled."""
        for queued in self._queued.values():
            for batch in queued:
                if batch.timer is not None:
                    batch.timer.cancel()
                for future in batch.futures:
                    future.cancel()
        self._queued.clear()
        tasks = list(self._posting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
