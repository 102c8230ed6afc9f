"""`WebhookPoster`: one signed POST of an outbox row to its webhook, judged by the delivery policy and observed.

The worker decides what to post and what a verdict does to its lane; this module only speaks HTTP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from crm_server.store.outbox import OutboxRow
from crm_server.store.webhooks import WebhookRecord
from crm_server.webhooks.policy import Outcome, RetrySchedule, Verdict, judge_response, judge_transport_error
from crm_server.webhooks.signature import delivery_headers
from crm_server.outbound_addresses import DeliveryTarget


@dataclass(frozen=True)
class DeliveryResult:
    """What one post ended as; handed to observers (metrics)."""

    verdict: Verdict
    latency: float
    status: int | None


_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")


def _error_code(response: httpx.Response) -> str:
    """The receiver's machine `code` when it answered in the contract's error shape: all of its answer the outbox
    keeps (its text could be anything, and is shown to operators)."""
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return ""
    return code if isinstance(code, str) and _CODE.fullmatch(code) else ""


class WebhookPoster:
    def __init__(self, schedule: RetrySchedule, observers: list[Callable[[DeliveryResult], None]]) -> None:
        self._schedule = schedule
        self._observers = observers

    async def post(self, http: httpx.AsyncClient, webhook: WebhookRecord, row: OutboxRow,
                   target: DeliveryTarget | None = None) -> tuple[Outcome, int | None]:
        """The outcome of posting `row` now, and the receiver's status (None when it never answered).

        `target`: the checked address to connect to (crm_server.outbound_addresses.DeliveryTargets), else the URL."""
        headers = delivery_headers(webhook.secret, row.event_id, int(time.time()), row.body,
                                   with_secret=webhook.secret_header)
        attempt = row.attempts + 1
        started = time.perf_counter()
        target = target or DeliveryTarget(webhook.url)
        try:
            response = await http.post(target.url, content=row.body, headers={**headers, **target.headers},
                                       extensions=target.extensions or None)
        except httpx.HTTPError as exc:
            # The type only: an exception's text may quote what the other side sent.
            outcome = judge_transport_error(type(exc).__name__, attempt, self._schedule)
            self._observe(outcome.verdict, started, None)
            return outcome, None
        outcome = judge_response(
            response.status_code, response.headers.get("retry-after"), attempt, self._schedule,
            _error_code(response) if response.status_code >= 300 else "",
        )
        self._observe(outcome.verdict, started, response.status_code)
        return outcome, response.status_code

    def _observe(self, verdict: Verdict, started: float, status: int | None) -> None:
        result = DeliveryResult(verdict=verdict, latency=time.perf_counter() - started, status=status)
        for observer in self._observers:
            observer(result)
