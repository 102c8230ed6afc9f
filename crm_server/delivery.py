"""`WebhookDelivery`: drains the outbox to the registered webhooks, in order per chat, concurrently across chats.

Each chat is a lane: the worker leases its head row and the rows behind it, posts them one by one, and stops the
lane at the first retryable failure, so a chat's later messages wait behind its failing head while other chats
keep flowing. Delivery is at-least-once: a crash between a post and its bookkeeping re-sends the same event id.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from crm_server.delivery_policy import RetrySchedule, Verdict, judge_response, judge_transport_error
from crm_server.store.outbox import Lane, OutboxRow, OutboxTable
from crm_server.store.webhooks import WebhookRecord, WebhookTable
from crm_server.webhook_signature import delivery_headers

log = logging.getLogger("crm_server.delivery")


@dataclass(frozen=True)
class DeliverySettings:
    concurrency: int = 32  # lanes (chats) posting at once
    lane_batch: int = 200  # rows leased per lane at a time
    lease_seconds: float = 120.0
    idle_poll_seconds: float = 1.0  # longest sleep when nothing is due and nobody wakes us
    flush_every: int = 50  # delivered rows recorded per write; a crash re-sends at most this many per lane


@dataclass(frozen=True)
class DeliveryResult:
    """What one post ended as; handed to observers (metrics)."""

    verdict: Verdict
    latency: float
    status: int | None


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
        self._lanes: dict[Lane, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """New rows were enqueued (or a webhook re-registered): look now instead of at the next poll."""
        self._wakeup.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        lanes = list(self._lanes.values())
        for lane in lanes:
            lane.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
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

    async def _run(self) -> None:
        while True:
            try:
                await self._fill_lanes()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store may be briefly unavailable; the next round tries again
                log.exception("delivery round failed")
            await self._sleep_until_due()

    async def _fill_lanes(self) -> None:
        free = self._settings.concurrency - len(self._lanes)
        if free <= 0:
            return
        for lane in await self._outbox.due_lanes(time.time(), free, set(self._lanes)):
            task = asyncio.create_task(self._drain(lane), name=f"lane-{lane.chat_id}")
            self._lanes[lane] = task
            task.add_done_callback(lambda _task, lane=lane: self._lane_done(lane))

    def _lane_done(self, lane: Lane) -> None:
        self._lanes.pop(lane, None)
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

    async def _drain(self, lane: Lane) -> None:
        settings = self._settings
        lease_until = time.time() + settings.lease_seconds
        rows = await self._outbox.lease(lane, self._owner, lease_until, settings.lane_batch)
        if not rows:
            return
        webhook = await self._webhooks.get(lane.project_id, lane.phone)
        http = self._take_client()
        delivered: list[int] = []
        # Rows whose outcome is written (delivered, retry scheduled, dead): their lease is cleared with it.
        settled: set[int] = set()
        last_status = 200
        position = 0

        async def flush_delivered() -> None:
            nonlocal delivered
            await self._outbox.mark_delivered(delivered, last_status, time.time())
            settled.update(delivered)
            delivered = []

        try:
            if webhook is None or not webhook.enabled:
                return
            for position, row in enumerate(rows):
                if time.time() > lease_until - settings.lease_seconds / 2:
                    lease_until = time.time() + settings.lease_seconds
                    await self._outbox.extend_lease([r.id for r in rows[position:]], self._owner, lease_until)
                outcome, status = await self._post(http, webhook, row)
                if outcome.verdict is Verdict.DELIVERED:
                    delivered.append(row.id)
                    last_status = status or 200
                    if len(delivered) >= settings.flush_every:
                        await flush_delivered()
                    continue
                await flush_delivered()
                now = time.time()
                if outcome.verdict is Verdict.GONE:
                    await self._webhooks.set_enabled(lane.project_id, lane.phone, False)
                    await self._outbox.mark_failed_attempt(
                        row, dead=False, next_attempt_at=now, status=status, error=outcome.error or "", now=now
                    )
                    settled.add(row.id)
                    log.warning("webhook for %s/%s answered 410 Gone: disabled until it is registered again",
                                lane.project_id, lane.phone)
                    return
                first_attempt = row.first_attempt_at or now
                dead = outcome.verdict is Verdict.DEAD or self._schedule.gives_up(first_attempt, now)
                await self._outbox.mark_failed_attempt(
                    row, dead=dead, next_attempt_at=now + outcome.delay, status=status,
                    error=outcome.error or "", now=now,
                )
                settled.add(row.id)
                if not dead:
                    return  # the head failed: the lane waits for its retry
        finally:
            self._return_client(http)
            await flush_delivered()
            # Only the rows left untouched still carry our lease (a fully delivered lane needs no extra write).
            await self._outbox.release([row.id for row in rows if row.id not in settled], self._owner)

    async def _post(self, http: httpx.AsyncClient, webhook: WebhookRecord,
                    row: OutboxRow) -> tuple["Outcome", int | None]:  # noqa: F821
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
