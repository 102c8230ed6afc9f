"""`WebhookDelivery`: drains the outbox to the registered webhooks, in order per chat, concurrently across chats.

Each chat is a lane: the worker leases its head row and the rows behind it, posts them one by one, and stops the
lane at the first retryable failure, so a chat's later messages wait behind its failing head while other chats
keep flowing. Delivery is at-least-once: a crash between a post and its bookkeeping re-sends the same event id.

A lane whose lease took every pending row of its chat stays open for a moment after its last post: the listener
then inserts that chat's new messages already leased to it and hands them over in memory (`claim`, `hand_over`),
so a busy chat costs no read of the outbox per message. Delivered rows are recorded for all lanes together, a few
times a second; until then they keep their lease, so no worker takes them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from crm_server.webhooks.policy import Outcome, RetrySchedule, Verdict, judge_response, judge_transport_error
from crm_server.store.outbox import Lane, OutboxRow, OutboxTable
from crm_server.store.webhooks import WebhookRecord, WebhookTable
from crm_server.webhooks.signature import delivery_headers

log = logging.getLogger("crm_server.webhooks.worker")

# A closing lane waits this long for rows claimed for it (an INSERT in flight); later ones are released instead.
CLAIM_WAIT_SECONDS = 5.0
# Backoff while the store refuses to record delivered rows: they keep their lease meanwhile.
RECORD_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class DeliverySettings:
    concurrency: int = 64  # lanes (chats) open at once
    lane_batch: int = 200  # rows a lane takes per tenure; past it the chat gives its slot back
    lease_seconds: float = 120.0
    idle_poll_seconds: float = 1.0  # longest sleep when nothing is due and nobody wakes us
    # An emptied lane waits this long for the listener's next message of its chat before giving its slot back.
    # (An idle lane gives its slot up at once when another chat waits for one.)
    linger_seconds: float = 1.0
    record_every_seconds: float = 0.02  # delivered rows of all lanes are recorded in one write per period
    # After a wake-up, wait this long before looking for due lanes: the wake-ups of a burst (every new message,
    # every finished lane) then share one query, and a chat's messages of those milliseconds share one lease.
    gather_seconds: float = 0.005


@dataclass(frozen=True)
class DeliveryResult:
    """What one post ended as; handed to observers (metrics)."""

    verdict: Verdict
    latency: float
    status: int | None


@dataclass(eq=False)
class LaneRun:
    """One lane's tenure in this worker."""

    lane: Lane
    rows: deque[OutboxRow] = field(default_factory=deque)  # held (leased to us), not posted yet
    leasing: bool = True  # its first lease is running: rows handed over meanwhile wait in `early`
    early: list[OutboxRow] = field(default_factory=list)
    complete: bool = False  # its lease took every pending row of the chat: newer rows may follow in memory
    open: bool = False  # takes the listener's new rows (complete, and not stopping)
    tainted: bool = False  # a row came it could not take: rows may sit behind ours unleased, never open
    claims: int = 0  # rows claimed for us whose INSERT has not returned yet
    taken: int = 0  # rows held this tenure
    held: set[int] = field(default_factory=set)  # ids of the rows taken this tenure
    closed: bool = False  # gave back what it held: a late hand-over is released, not posted
    lease_until: float = 0.0
    fed: asyncio.Event = field(default_factory=asyncio.Event)


class WebhookDelivery:
    def __init__(
        self,
        outbox: OutboxTable,
        webhook_table: WebhookTable,
        http: httpx.AsyncClient,
        schedule: RetrySchedule | None = None,
        settings: DeliverySettings | None = None,
        observers: list[Callable[[DeliveryResult], None]] | None = None,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self._outbox = outbox
        self._webhooks = webhook_table
        self._http = http
        # With a factory, each lane posts through a client of its own (kept for the next lane, connections and all):
        # httpx's pool looks at every connection it holds on every request, so one client shared by 32 lanes spent
        # three times the CPU per post of a client per lane.
        self._client_factory = client_factory
        self._idle_clients: list[httpx.AsyncClient] = []
        self._clients: list[httpx.AsyncClient] = []
        self._schedule = schedule or RetrySchedule()
        self._settings = settings or DeliverySettings()
        self._observers = observers or []
        self._owner = uuid.uuid4().hex
        self._lanes: dict[Lane, LaneRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivered: list[tuple[Lane, int, int]] = []  # (lane, row id, status) posted, not recorded yet
        # Per chat, rows posted and being recorded: a new run of the chat skips them instead of waiting for the write.
        self._unrecorded: dict[Lane, set[int]] = {}
        self._recorder: asyncio.Task[None] | None = None
        self._closed_since_record = False
        self._running = False
        self._fed = False  # a listener hands rows over: lanes linger for them (without one, lingering is idle)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """New rows were enqueued (or a webhook re-registered): look now instead of at the next poll."""
        self._wakeup.set()

    def enqueued(self, lanes: set[Lane]) -> None:
        """New rows no run took. A chat with a run here already waits for it to end (it wakes us then). Other chats
        start a run at once, without a look at the outbox for due chats: the run's lease checks the chat's head
        row anyway. With no slot free, a lane idling for its chat's next message gives its slot up."""
        if not self._running:
            return
        waiting = [lane for lane in lanes if lane not in self._lanes]
        while waiting and len(self._lanes) < self._settings.concurrency:
            self._start_run(waiting.pop())
        if waiting:
            self._yield_idle_slots(len(waiting))
            self._wakeup.set()  # the scheduler starts them as slots free up

    def _yield_idle_slots(self, wanted: int) -> None:
        """Ask up to `wanted` lanes that idle for their chat's next message to leave now."""
        for run in self._lanes.values():
            if wanted <= 0:
                return
            if run.open and not run.rows and not run.claims:
                run.open = False
                run.fed.set()
                wanted -= 1

    # --- the listener's side: new rows of open lanes are handed over in memory -------------------------------------

    @property
    def owner(self) -> str:
        """This worker's lease owner id: rows inserted for an open run carry it."""
        return self._owner

    def claim(self, lane: Lane, rows: int = 1) -> LaneRun | None:
        """Reserve the next `rows` new rows of `lane` for its open run (insert them leased until
        `run.lease_until`), or None.

        A run still leasing takes them too: its lease decides whether they follow the leased rows or go back.
        Refusing is for good (the run closes): once a row of the chat is inserted unleased, every later one must
        wait behind it, in the table, for the next tenure.
        """
        self._fed = True
        run = self._lanes.get(lane)
        if run is None:
            return None
        if not (run.open or run.leasing) or run.tainted or run.taken + run.claims >= self._settings.lane_batch:
            run.open = False
            run.tainted = True
            return None
        run.claims += rows
        return run

    def hand_over(self, run: LaneRun, rows: list[OutboxRow], claimed: int) -> None:
        """The claimed rows are committed (`rows`: those that were new; a redelivered message is not)."""
        run.claims -= claimed
        if run.leasing:
            run.early.extend(rows)
        elif run.closed or not run.complete:
            # Stopped waiting (shutdown), or its lease left older rows in the table: these go back behind them.
            returned = [row.id for row in rows if row.id not in run.held]
            if returned:
                self._spawn(self._outbox.release(returned, self._owner), "outbox-release")
        else:
            self._take(run, rows)
        run.fed.set()

    @staticmethod
    def _take(run: LaneRun, rows: list[OutboxRow]) -> None:
        """Hold `rows` in chat order, once each: a row inserted just before the lease read it comes both ways."""
        for row in sorted(rows, key=lambda row: row.id):
            if row.id not in run.held:
                run.held.add(row.id)
                run.rows.append(row)
                run.taken += 1

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._recorder is not None:
            self._recorder.cancel()
            await asyncio.gather(self._recorder, return_exceptions=True)
        with contextlib.suppress(Exception):  # what is not recorded now is posted again after the restart
            await self._record(self._take_delivered())
        clients, self._clients, self._idle_clients = self._clients, [], []
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)

    def _take_client(self) -> httpx.AsyncClient:
        if self._client_factory is None:
            return self._http
        if self._idle_clients:
            return self._idle_clients.pop()
        client = self._client_factory()
        self._clients.append(client)
        return client

    def _return_client(self, client: httpx.AsyncClient) -> None:
        if self._client_factory is not None:
            self._idle_clients.append(client)

    # --- scheduling ------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._fill_lanes()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store may be briefly unavailable; the next round tries again
                log.exception("delivery round failed")
            await self._sleep_until_due()
            if self._settings.gather_seconds:
                await asyncio.sleep(self._settings.gather_seconds)
                self._wakeup.clear()  # the wake-ups of these milliseconds are answered by the round about to run

    async def _fill_lanes(self) -> None:
        free = self._settings.concurrency - len(self._lanes)
        if free <= 0:
            return
        for lane in await self._outbox.due_lanes(time.time(), free, set(self._lanes)):
            # (Chats may have started meanwhile, see enqueued.)
            if lane not in self._lanes and len(self._lanes) < self._settings.concurrency:
                self._start_run(lane)

    def _start_run(self, lane: Lane) -> None:
        run = LaneRun(lane)
        self._lanes[lane] = run
        task = asyncio.create_task(self._drain(run), name=f"lane-{lane.chat_id}")
        self._tasks.add(task)
        task.add_done_callback(lambda task, run=run: self._lane_done(run, task))

    def _lane_done(self, run: LaneRun, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._lanes.get(run.lane) is run:
            del self._lanes[run.lane]
        self._closed_since_record = True
        self._wakeup.set()  # a slot is free: the next lane may be due

    async def _sleep_until_due(self) -> None:
        if self._wakeup.is_set():
            # Woken while filling lanes (new rows, a lane finished): look again at once, no need to ask when.
            self._wakeup.clear()
            return
        timeout = self._settings.idle_poll_seconds
        if len(self._lanes) < self._settings.concurrency:
            next_due = await self._outbox.next_due_at()
            if next_due is not None:
                timeout = min(timeout, max(next_due - time.time(), 0.0))
        if timeout <= 0 and not self._lanes:
            timeout = 0.05  # due rows we could not lease (another worker holds them): do not spin
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            pass
        self._wakeup.clear()

    # --- one lane --------------------------------------------------------------------------------------------------

    async def _drain(self, run: LaneRun) -> None:
        settings = self._settings
        lane = run.lane
        http: httpx.AsyncClient | None = None
        try:
            run.lease_until = time.time() + settings.lease_seconds
            try:
                leased = await self._outbox.lease(lane, self._owner, run.lease_until, settings.lane_batch,
                                                  skip=set(self._unrecorded.get(lane, ())))
            finally:
                run.leasing = False
            # Rows handed over during the lease are newer than every row it could not see; they follow it when it
            # took the whole chat (an empty lease means the head is not ours to take: they wait behind it).
            run.complete = bool(leased) and len(leased) < settings.lane_batch and not run.tainted
            early, run.early = run.early, []
            self._take(run, leased + early if run.complete else leased)
            if not run.complete:
                returned = [row.id for row in early if row.id not in run.held]
                if returned:
                    await self._outbox.release(returned, self._owner)
            if not run.rows:
                return
            run.open = self._fed and run.complete and not run.tainted
            webhook = await self._webhooks.get(lane.project_id, lane.phone)
            if webhook is None or not webhook.enabled:
                return
            http = self._take_client()
            while await self._next_row(run):
                if time.time() > run.lease_until - settings.lease_seconds / 2:
                    run.lease_until = time.time() + settings.lease_seconds
                    await self._outbox.extend_lease([r.id for r in run.rows], self._owner, run.lease_until)
                row = run.rows.popleft()
                outcome, status = await self._post(http, webhook, row)
                if outcome.verdict is Verdict.DELIVERED:
                    self._record_later(lane, row.id, status or 200)
                    continue
                run.open = False
                if not await self._failed(lane, row, outcome, status):
                    return  # the head waits for its retry (or the webhook is gone): the lane stops
        finally:
            run.leasing = False
            run.open = False
            if http is not None:
                self._return_client(http)
            await self._close_run(run)

    async def _next_row(self, run: LaneRun) -> bool:
        """Whether there is a row to post: one held, or one the listener hands over while the lane lingers."""
        while not run.rows:
            if not run.open and not run.claims:
                return False
            run.fed.clear()
            try:
                if run.claims:
                    await run.fed.wait()  # an INSERT with our rows is in flight: they are ours to post
                else:
                    await asyncio.wait_for(run.fed.wait(), self._settings.linger_seconds)
            except TimeoutError:
                if not run.rows and not run.claims:
                    run.open = False  # decided in the same step as the check: no claim can slip in between
        return True

    async def _close_run(self, run: LaneRun) -> None:
        """Give back what the run still holds: rows not posted, and those claimed while it was stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLAIM_WAIT_SECONDS):
                while run.claims:
                    run.fed.clear()
                    await run.fed.wait()
        run.closed = True
        if run.rows:
            await self._outbox.release([row.id for row in run.rows], self._owner)
            run.rows.clear()

    async def _failed(self, lane: Lane, row: OutboxRow, outcome: Outcome, status: int | None) -> bool:
        """Record a failed post; True if the lane goes on (the row is a dead letter and the next one may go)."""
        now = time.time()
        if outcome.verdict is Verdict.GONE:
            await self._webhooks.set_enabled(lane.project_id, lane.phone, False)
            await self._outbox.mark_failed_attempt(
                row, dead=False, next_attempt_at=now, status=status, error=outcome.error or "", now=now
            )
            log.warning("webhook for %s/%s answered 410 Gone: disabled until it is registered again",
                        lane.project_id, lane.phone)
            return False
        first_attempt = row.first_attempt_at or now
        dead = outcome.verdict is Verdict.DEAD or self._schedule.gives_up(first_attempt, now)
        await self._outbox.mark_failed_attempt(
            row, dead=dead, next_attempt_at=now + outcome.delay, status=status, error=outcome.error or "", now=now,
        )
        return dead

    # --- recording delivered rows ------------------------------------------------------------------------------------

    def _record_later(self, lane: Lane, row_id: int, status: int) -> None:
        self._delivered.append((lane, row_id, status))
        self._unrecorded.setdefault(lane, set()).add(row_id)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_soon(), name="outbox-delivered")

    def _take_delivered(self) -> list[tuple[Lane, int, int]]:
        taken, self._delivered = self._delivered, []
        return taken

    async def _record_soon(self) -> None:
        attempt = 0
        while self._delivered:
            await asyncio.sleep(self._settings.record_every_seconds)
            batch = self._take_delivered()
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
            if self._closed_since_record:
                # A chat that closed with rows behind these (inserted unleased) is due now that its head is done.
                self._closed_since_record = False
                self._wakeup.set()

    async def _record(self, batch: list[tuple[Lane, int, int]]) -> None:
        by_status: dict[int, list[int]] = {}
        for _, row_id, status in batch:
            by_status.setdefault(status, []).append(row_id)
        now = time.time()
        for status, ids in by_status.items():
            await self._outbox.mark_delivered(ids, status, now)

    async def _post(self, http: httpx.AsyncClient, webhook: WebhookRecord,
                    row: OutboxRow) -> tuple[Outcome, int | None]:
        headers = delivery_headers(webhook.secret, row.event_id, int(time.time()), row.body)
        attempt = row.attempts + 1
        started = time.perf_counter()
        try:
            response = await http.post(webhook.url, content=row.body, headers=headers)
        except httpx.HTTPError as exc:
            outcome = judge_transport_error(f"{type(exc).__name__}: {exc}"[:300], attempt, self._schedule)
            self._observe(outcome.verdict, started, None)
            return outcome, None
        outcome = judge_response(
            response.status_code, response.headers.get("retry-after"), attempt, self._schedule,
            response.text[:200] if response.status_code >= 300 else "",
        )
        self._observe(outcome.verdict, started, response.status_code)
        return outcome, response.status_code

    def _observe(self, verdict: Verdict, started: float, status: int | None) -> None:
        result = DeliveryResult(verdict=verdict, latency=time.perf_counter() - started, status=status)
        for observer in self._observers:
            observer(result)
