"""`BatchAssembler`: the open batch of each batched registration, which chat lanes fill with their ready rows and
which goes out when full or `max_wait_ms` after its first row; each row's outcome comes back on its own future.

Order per chat holds because a lane puts a chat's rows in a batch in order and waits for their outcomes before
giving it more (a chat is never in two batches on their way at once); batches of different chats may be in flight
together. The assembler knows nothing of the outbox: the lane records what each outcome means.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from crm_server.outbound_addresses import DeliveryTarget
from crm_server.store.outbox import OutboxRow
from crm_server.store.webhooks import WebhookRecord
from crm_server.webhooks.policy import Outcome, RetrySchedule, Verdict, judge_transport_error

log = logging.getLogger(__name__)

RowOutcome = tuple[Outcome, int | None]  # the verdict on a row, and the receiver's status (None: no answer)
# The outcome of rows taken back from a batch before it went (their account was paused or removed): never posted.
WITHDRAWN: RowOutcome = (Outcome(Verdict.RETRY, error="withdrawn"), None)
PostBatch = Callable[[WebhookRecord, DeliveryTarget | None, list[OutboxRow]], Awaitable[list[RowOutcome]]]


@dataclass(eq=False)
class _OpenBatch:
    webhook: WebhookRecord
    target: DeliveryTarget | None  # the address its first lane checked (lanes re-check theirs at every tenure)
    rows: list[OutboxRow] = field(default_factory=list)
    futures: list[asyncio.Future[RowOutcome]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class BatchAssembler:
    def __init__(self, post: PostBatch, schedule: RetrySchedule) -> None:
        self._post = post
        self._schedule = schedule
        self._open: dict[tuple[str, str], _OpenBatch] = {}  # (project_id, phone) → the batch being filled
        self._posting: set[asyncio.Task[None]] = set()

    def submit(self, webhook: WebhookRecord, target: DeliveryTarget | None,
               rows: Sequence[OutboxRow]) -> list[asyncio.Future[RowOutcome]]:
        """Put the first rows of `rows` (as many as the open batch takes, at least one) into the registration's
        batch; their futures, in order. The caller submits the rest once these have their outcomes."""
        assert webhook.batch is not None and rows
        key = (webhook.project_id, webhook.phone)
        batch = self._open.get(key)
        if batch is not None and batch.webhook != webhook:
            self._flush(batch)  # re-registered meanwhile (URL, secret, batching): what is in it goes as it was
            batch = None
        if batch is None:
            batch = self._open[key] = _OpenBatch(webhook, target)
            loop = asyncio.get_running_loop()
            batch.timer = loop.call_later(webhook.batch.max_wait_ms / 1000, self._flush, batch)
        taken = rows[:webhook.batch.max_events - len(batch.rows)]
        futures = [asyncio.get_running_loop().create_future() for _ in taken]
        batch.rows.extend(taken)
        batch.futures.extend(futures)
        if len(batch.rows) >= webhook.batch.max_events:
            self._flush(batch)
        return futures

    def withdraw(self, project_id: str, phone: str) -> None:
        """The account's registration was paused or removed: its batch being filled does not go; its rows' outcome
        is WITHDRAWN (a batch already on its way ends, as a single post in flight does)."""
        batch = self._open.pop((project_id, phone), None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        for future in batch.futures:
            if not future.done():
                future.set_result(WITHDRAWN)

    def _flush(self, batch: _OpenBatch) -> None:
        key = (batch.webhook.project_id, batch.webhook.phone)
        if self._open.get(key) is batch:
            del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if not batch.rows:
            return
        task = asyncio.create_task(self._send(batch), name="webhook-batch")
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

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
        for future, outcome in zip(batch.futures, outcomes, strict=True):
            if not future.done():  # its lane stopped waiting (shutdown): nobody records it, it is re-sent
                future.set_result(outcome)

    async def aclose(self) -> None:
        """Stop: open batches are dropped (their lanes give the rows back), batches on their way cancelled."""
        for batch in list(self._open.values()):
            if batch.timer is not None:
                batch.timer.cancel()
            for future in batch.futures:
                future.cancel()
        self._open.clear()
        tasks = list(self._posting)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
