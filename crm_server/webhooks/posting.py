"""`WebhookPoster`: one signed POST of an outbox row to its webhook, judged by the delivery policy and observed.

The worker decides what to post and what a verdict does to its lane; this module only speaks HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from crm_server.store.outbox import OutboxRow
from crm_server.store.webhooks import WebhookRecord
from crm_server.webhooks.policy import Outcome, RetrySchedule, Verdict, judge_response, judge_transport_error
from crm_server.webhooks.signature import delivery_headers


@dataclass(frozen=True)
class DeliveryResult:
    """What one post ended as; handed to observers (metrics)."""

    verdict: Verdict
    latency: float
    status: int | None


class WebhookPoster:
    def __init__(self, schedule: RetrySchedule, observers: list[Callable[[DeliveryResult], None]]) -> None:
        self._schedule = schedule
        self._observers = observers

    async def post(self, http: httpx.AsyncClient, webhook: WebhookRecord,
                   row: OutboxRow) -> tuple[Outcome, int | None]:
        """The outcome of posting `row` now, and the receiver's status (None when it never answered)."""
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
