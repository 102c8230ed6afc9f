"""`WebhookDelivery`: drains the outbox to the registered webhooks, in order per chat, concurrently across chats.

Each chat is a lane: the worker leases its head row and the rows behind it, posts them one by one, and stops the
lane at the first retryable failure, so a chat's later messages wait behind its failing head while other chats
keep flowing. Delivery is at-least-once: a crash between a post and its bookkeeping re-sends the same event id.

A lane whose lease took every pending row of its chat stays open for a moment after its last post: the listener
then inserts that chat's new messages already leased to it and hands them over in memory (`accept`),
so a busy chat costs no read of the outbox per message. Delivered rows are recorded for all lanes together, a few
times a second; until then they keep their lease, so no worker takes them again.

A batched registration's lanes put their rows into its batches instead (crm_server.webhooks.batching), a few at a
time in chat order, and act on each row's outcome as on a single post's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from crm_server.store.outbox import Lane, OutboxEvent, OutboxRow, OutboxTable
from crm_server.store.webhooks import WebhookRecord, WebhookTable
from crm_server.webhooks.batching import WITHDRAWN, BatchAssembler
from crm_server.webhooks.delivered import DeliveredRecorder
from crm_server.webhooks.events import event_type_of
from crm_server.webhooks.lanes import LaneClients, LaneRun
from crm_server.webhooks.media_payload import MediaPreparer
from crm_server.webhooks.media_source import MediaTransient
from crm_server.webhooks.policy import Outcome, RetrySchedule, Verdict, judge_transport_error
from crm_server.webhooks.posting import DeliveryResult, WebhookPoster
from crm_server.outbound_addresses import DeliveryTarget, DeliveryTargets, WebhookAddressRefused

log = logging.getLogger("crm_server.webhooks.worker")

# The status recorded for an event its registration did not subscribe to (never posted).
NOT_SUBSCRIBED = 0
Result = TypeVar("Result")
# A closing lane waits this long for rows claimed for it (an INSERT in flight); later ones are released instead.
CLAIM_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class DeliverySettings:
    concurrency: int = 64  # lanes (chats) open at once
    lane_batch: int = 200  # rows a lane takes per tenure; past it the chat gives its slot back if every slot is taken
    lease_seconds: float = 120.0
    batch_max_bytes: int = 256 * 1024  # a batched POST's body at most (one larger event goes alone)
    batches_in_flight: int = 2  # per batched registration; more due batches wait, and grow, meanwhile
    # A batched registration with no batch in flight is posted what is queued at once, not max_wait_ms later
    # (crm_server.webhooks.batching: "posting when idle"); False: every batch waits out max_wait_ms or fills.
    post_when_idle: bool = True
    idle_poll_seconds: float = 1.0  # longest sleep when nothing is due and nobody wakes us
    # An emptied lane waits this long for the listener's next message of its chat before giving its slot back.
    # (An idle lane gives its slot up at once when another chat waits for one.)
    linger_seconds: float = 1.0
    record_every_seconds: float = 0.02  # delivered rows of all lanes are recorded in one write per period
    # After a wake-up, wait this long before looking for due lanes: the wake-ups of a burst (every new message,
    # every finished lane) then share one query, and a chat's messages of those milliseconds share one lease.
    gather_seconds: float = 0.005


class LaneHandover:
    """One batch on its way from the listener into the outbox: which of its chats open runs take (`accept`)."""

    def __init__(self, worker: WebhookDelivery, claims: dict[Lane, tuple[LaneRun, int]]) -> None:
        self._worker = worker
        self._claims = claims

    def leases(self) -> dict[Lane, tuple[str, float]]:
        """Lane → (owner, lease end) to insert rows with; read at each attempt, as a run extends its lease while a
        failing store holds the insert up."""
        owner = self._worker._owner
        return {lane: (owner, run.lease_until) for lane, (run, _) in self._claims.items()}

    def committed(self, rows: list[OutboxRow]) -> None:
        """The batch is in the outbox (`rows`: the new ones): the runs take theirs, the other chats start one."""
        by_lane: dict[Lane, list[OutboxRow]] = {lane: [] for lane in self._claims}
        unclaimed: set[Lane] = set()
        for row in rows:
            if row.lane in by_lane:
                by_lane[row.lane].append(row)
            else:
                unclaimed.add(row.lane)
        for lane, (run, claimed) in self._claims.items():
            self._worker._hand_over(run, by_lane[lane], claimed)
        if unclaimed:
            self._worker._enqueued(unclaimed)


class WebhookDelivery:
    def __init__(
        self,
        outbox: OutboxTable,
        webhook_table: WebhookTable,
        http: httpx.AsyncClient | None,
        schedule: RetrySchedule | None = None,
        settings: DeliverySettings | None = None,
        observers: list[Callable[[DeliveryResult], None]] | None = None,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
        targets: DeliveryTargets | None = None,
        media: MediaPreparer | None = None,
    ) -> None:
        self._outbox = outbox
        self._webhooks = webhook_table
        self._clients = LaneClients(http, client_factory)
        self._schedule = schedule or RetrySchedule()
        self._settings = settings or DeliverySettings()
        self._poster = WebhookPoster(self._schedule, observers or [])
        self._batches = BatchAssembler(self._post_batch, self._schedule, self._settings.batch_max_bytes,
                                       self._settings.batches_in_flight, self._settings.post_when_idle)
        # Where each webhook URL may be posted to now (checked and pinned at every run); None: the URL as it is.
        self._targets = targets
        # Gives media events their file and a fresh signed URL right before each post (None: posted as stored).
        self._media = media
        self._owner = uuid.uuid4().hex
        self._lanes: dict[Lane, LaneRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._recorder = DeliveredRecorder(outbox, self._settings.record_every_seconds, self._recorded)
        self._closed_since_record = False
        self._running = False
        self._fed = False  # a listener hands rows over: lanes linger for them (without one, lingering is idle)
        # A chat was turned away for want of a slot and may still wait in the table: slots go by the scheduler
        # (oldest head first) until a round finds every due chat one.
        self._crowded = False
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def halt(self, project_id: str, phone: str) -> None:
        """The account's registration was paused or removed: its runs post nothing more (a post in flight ends)
        and give back what they hold, so it waits in the outbox."""
        for run in self._lanes.values():
            if run.lane.project_id == project_id and run.lane.phone == phone:
                run.halted = True
                run.open = False
                run.tainted = True  # claims no new rows: they wait in the table
                run.fed.set()
        self._batches.withdraw(project_id, phone)

    def delivered_unrecorded(self, project_id: str, phone: str) -> set[int]:
        """The account's rows its webhook took that are not recorded as delivered yet (they still look pending)."""
        return self._recorder.unrecorded_of(project_id, phone)

    def wake(self) -> None:
        """New rows were enqueued (or a webhook re-registered): look now instead of at the next poll."""
        self._wakeup.set()

    # --- the listener's side: committed rows of open lanes are handed over in memory --------------------------------

    def accept(self, batch: Sequence[OutboxEvent]) -> LaneHandover:
        """The listener is about to insert `batch`: the chats with an open run here have their rows inserted already
        leased to it (`leases()`), and once committed (`committed(rows)`) those rows go to their runs; chats without
        one start a run."""
        self._fed = True
        counts: dict[Lane, int] = {}
        for event in batch:
            counts[event.lane] = counts.get(event.lane, 0) + 1
        claims = {}
        for lane, count in counts.items():
            run = self._claim(lane, count)
            if run is not None:
                claims[lane] = (run, count)
        return LaneHandover(self, claims)

    def _claim(self, lane: Lane, rows: int) -> LaneRun | None:
        """Reserve the next `rows` new rows of `lane` for its open run, or None.

        A run still leasing takes them too: its lease decides whether they follow the leased rows or go back.
        Refusing is for good (the run closes): once a row of the chat is inserted unleased, every later one must
        wait behind it, in the table, for the next tenure.
        """
        run = self._lanes.get(lane)
        if run is None:
            return None
        if run.open and not run.tainted and run.taken + run.claims >= self._settings.lane_batch \
                and not self._crowded and len(self._lanes) < self._settings.concurrency:
            # A tenure ends to give the slot to a chat that waits for one; with a slot free, none does. Ending it
            # anyway stalled a busy chat: its rows went to the table behind the tenure's last ones, and the next
            # tenure's lease came after those were recorded (`make bench`'s paced run: 50 chats at 21 msg/s ended
            # their tenures together after 200 rows each, and the messages of the next second waited up to 1.3 s:
            # p99 263 ms, all of it in that second).
            run.next_tenure()
        if not (run.open or run.leasing) or run.tainted or run.taken + run.claims >= self._settings.lane_batch:
            run.open = False
            run.tainted = True
            # A run lingering for its chat's next message must hear that it will not get it: it would linger on
            # (`linger_seconds`), its chat's new rows waiting in the table behind it.
            run.fed.set()
            return None
        run.claims += rows
        return run

    def _hand_over(self, run: LaneRun, rows: list[OutboxRow], claimed: int) -> None:
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

    def _enqueued(self, lanes: set[Lane]) -> None:
        """New rows no run took. A chat with a run here already waits for it to end (it wakes us then). Other chats
        start a run at once, without a look at the outbox for due chats: the run's lease checks the chat's head
        row anyway. With no slot free, a lane idling for its chat's next message gives its slot up."""
        if not self._running:
            return
        waiting = [lane for lane in lanes if lane not in self._lanes]
        # While chats wait in the table for a slot, a slot that frees is theirs, in the order they came (the
        # scheduler's): a busy chat whose next message comes just as its tenure ends would take it back at once,
        # every time, and the waiting chats never get one.
        while waiting and not self._crowded and len(self._lanes) < self._settings.concurrency:
            self._start_run(waiting.pop())
        if waiting:
            self._crowded = True
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
        await self._batches.aclose()
        await self._recorder.stop()
        # The rows of the lanes just cancelled are still leased to us: hand them back so another instance's worker
        # takes them now, not when the lease expires (a post cut off here is redelivered: at-least-once).
        with contextlib.suppress(Exception):
            await self._outbox.release_all(self._owner)
        await self._clients.aclose()

    # --- scheduling ------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        # `_running`, not only the cancellation, ends the loop: Python 3.11's `asyncio.wait_for` returns the inner
        # result and drops a cancellation that arrives as the inner wait completes, which left `stop()` waiting
        # forever for a worker that went on (a teardown hang in tests/crm_server/webhooks/test_media_delivery.py).
        while self._running:
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
        due = await self._outbox.due_lanes(time.time(), free, set(self._lanes))
        for lane in due:
            # (Chats may have started meanwhile, see enqueued.)
            if lane not in self._lanes and len(self._lanes) < self._settings.concurrency:
                self._start_run(lane)
        if len(due) < free:
            self._crowded = False  # every due chat has a slot: new chats may start at once again

    def _start_run(self, lane: Lane) -> None:
        run = LaneRun(lane)
        self._lanes[lane] = run
        task = asyncio.create_task(self._drain(run), name=f"lane-{lane.chat_id}")
        self._tasks.add(task)
        task.add_done_callback(lambda task, run=run: self._lane_done(run, task))

    def _recorded(self) -> None:
        if self._closed_since_record:
            # A chat that closed with rows behind these (inserted unleased) is due now that its head is done.
            self._closed_since_record = False
            self._wakeup.set()

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
            # asyncio.timeout, not wait_for: it never swallows a cancellation (see `_run`).
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
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
                                                  skip=self._recorder.unrecorded(lane))
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
            if webhook is None or not webhook.enabled or webhook.paused:
                return
            target = None
            if self._targets is not None:
                try:
                    target = await self._targets.target(webhook.url)
                except WebhookAddressRefused as exc:
                    # Its name resolves somewhere webhooks may not go (now): the head waits, as for a refused
                    # connection, and the operator sees why.
                    head = run.rows[0]
                    outcome = judge_transport_error(f"webhook address refused: {exc}", head.attempts + 1,
                                                    self._schedule)
                    await self._failed(lane, head, outcome, None)
                    return
            if webhook.batch is not None:
                await self._drain_batched(run, webhook, target)
                return
            http = self._clients.take()
            while await self._next_row(run) and not run.halted:
                if time.time() > run.lease_until - settings.lease_seconds / 2:
                    run.lease_until = time.time() + settings.lease_seconds
                    await self._outbox.extend_lease([r.id for r in run.rows], self._owner, run.lease_until)
                row = run.rows.popleft()
                if not webhook.wants(event_type_of(row.body)):
                    # A type the registration did not ask for is never posted (nor its file fetched): done with,
                    # recorded with status 0 so the operator's view tells it from a delivery.
                    self._recorder.add(lane, row.id, NOT_SUBSCRIBED)
                    continue
                if self._media is not None and self._media.carries_media(row):
                    try:
                        row = await self._leased_while(run, row, self._media.body_for(row))
                    except MediaTransient as exc:
                        # Its file cannot be had now: the chat's later messages wait behind it (order), and
                        # only this chat waits: other lanes keep posting.
                        run.open = False
                        await self._media_waits(row, str(exc))
                        return
                    if run.halted:  # paused or removed while its file came: it waits (given back) unposted
                        run.rows.appendleft(row)
                        break
                outcome, status = await self._poster.post(http, webhook, row, target)
                if outcome.verdict is Verdict.DELIVERED:
                    self._recorder.add(lane, row.id, status or 200)
                    continue
                run.open = False
                if not await self._failed(lane, row, outcome, status):
                    return  # the head waits for its retry (or the webhook is gone): the lane stops
        finally:
            run.leasing = False
            run.open = False
            if http is not None:
                self._clients.give_back(http)
            await self._close_run(run)

    async def _leased_while(self, run: LaneRun, row: OutboxRow, work: Awaitable[Result],
                            also: Sequence[OutboxRow] = ()) -> Result:
        """Await `work` (a download may take minutes), extending the lane's lease meanwhile so no other worker
        takes the chat (`also`: rows the lane holds outside `run.rows`, e.g. those of a batch on its way)."""
        settings = self._settings
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=settings.lease_seconds / 3)
                if done:
                    return task.result()
                run.lease_until = time.time() + settings.lease_seconds
                await self._outbox.extend_lease([row.id] + [r.id for r in also] + [r.id for r in run.rows],
                                                self._owner, run.lease_until)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # --- a batched registration's lane ---------------------------------------------------------------------------

    async def _drain_batched(self, run: LaneRun, webhook: WebhookRecord, target: DeliveryTarget | None) -> None:
        """Post the lane's rows in its registration's batches: up to a batch's worth at a time, in chat order, each
        group's outcomes awaited before the next (so the chat is in one batch at a time)."""
        assert webhook.batch is not None
        settings = self._settings
        lane = run.lane
        while await self._next_row(run) and not run.halted:
            if time.time() > run.lease_until - settings.lease_seconds / 2:
                run.lease_until = time.time() + settings.lease_seconds
                await self._outbox.extend_lease([r.id for r in run.rows], self._owner, run.lease_until)
            group: list[OutboxRow] = []
            waiting: tuple[OutboxRow, str] | None = None
            while run.rows and len(group) < webhook.batch.max_events:
                row = run.rows.popleft()
                if not webhook.wants(event_type_of(row.body)):
                    self._recorder.add(lane, row.id, NOT_SUBSCRIBED)  # as a single post's lane: never posted
                    continue
                if self._media is not None and self._media.carries_media(row):
                    try:
                        row = await self._leased_while(run, row, self._media.body_for(row), also=group)
                    except MediaTransient as exc:
                        waiting = (row, str(exc))  # it and the chat's later rows wait; the rows before it go
                        break
                group.append(row)
                if run.halted:
                    break
            if run.halted:  # paused or removed meanwhile: everything held waits (given back) unposted
                run.rows.extendleft(reversed(group + ([waiting[0]] if waiting else [])))
                break
            if group and not await self._post_in_batches(run, webhook, target, group):
                if waiting:
                    run.rows.appendleft(waiting[0])
                return
            if waiting:
                run.open = False
                await self._media_waits(*waiting)
                return

    async def _post_in_batches(self, run: LaneRun, webhook: WebhookRecord, target: DeliveryTarget | None,
                               group: list[OutboxRow]) -> bool:
        """Post `group` (rows of one chat, in order) through the batches; True if the lane goes on.

        At the first row that must retry, the chat's later rows are not counted delivered, whatever their answer:
        they go back to the lane and are posted again after it (the receiver is idempotent)."""
        lane = run.lane
        rest = group
        while rest:
            futures = self._batches.submit(webhook, target, rest)
            sent, rest = rest[:len(futures)], rest[len(futures):]
            try:
                results = await self._leased_while(run, sent[0], asyncio.gather(*futures), also=sent[1:] + rest)
            except BaseException:
                run.rows.extendleft(reversed(sent + rest))  # outcome unknown: given back, posted again later
                raise
            for index, (row, (outcome, status)) in enumerate(zip(sent, results, strict=True)):
                if outcome is WITHDRAWN[0]:
                    run.rows.extendleft(reversed(sent[index:] + rest))  # never posted: given back, still pending
                    return False
                if outcome.verdict is Verdict.DELIVERED:
                    self._recorder.add(lane, row.id, status or 200)
                    continue
                run.open = False
                if not await self._failed(lane, row, outcome, status):
                    run.rows.extendleft(reversed(sent[index + 1:] + rest))
                    return False
        return True

    async def _post_batch(self, webhook: WebhookRecord, target: DeliveryTarget | None,
                          rows: list[OutboxRow]) -> list[tuple[Outcome, int | None]]:
        http = self._clients.take()
        try:
            return await self._poster.post_batch(http, webhook, rows, target)
        finally:
            self._clients.give_back(http)

    async def _media_waits(self, row: OutboxRow, reason: str) -> None:
        """The row waits for its file, with the lane's backoff; never a dead letter for it (the window does not
        apply: the file is not the receiver's fault, and the message must not be lost)."""
        now = time.time()
        delay = self._schedule.delay(row.attempts + 1)
        await self._outbox.mark_failed_attempt(row, dead=False, next_attempt_at=now + delay, status=None,
                                               error=f"media not ready: {reason}"[:200], now=now)

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
