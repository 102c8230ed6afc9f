"""`WebhookPoster`: one signed POST of an outbox row (or of a batch of them) to its webhook, judged by the delivery
policy and observed.

The worker decides what to post and what a verdict does to its lane; this module only speaks HTTP.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from crm_server.store.outbox import OutboxRow
from crm_server.store.webhooks import WebhookRecord
from crm_server.webhooks import batch_results
from crm_server.webhooks.policy import Outcome, RetrySchedule, Verdict, judge_response, judge_transport_error
from crm_server.webhooks.signature import delivery_headers
from crm_server.outbound_addresses import DeliveryTarget


@dataclass(frozen=True)
class DeliveryResult:
    """What one post ended as; handed to observers (metrics)."""

    verdict: Verdict
    latency: float
    status: int | None
    batch_events: int | None = None  # a batch's POST: how many events it carried


_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
log = logging.getLogger(__name__)


def _error_code(response: httpx.Response) -> str:
    """The receiver's machine `code` when it answered in the contract's error shape: all of its answer the outbox
    keeps (its text could be anything, and is shown to operators)."""
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return ""
    return code if isinstance(code, str) and _CODE.fullmatch(code) else ""


def _code_in(body: bytes | None) -> str:
    """As `_error_code`, of an answer already read (None: too large to read)."""
    if body is None:
        return ""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    return batch_results.machine_code(document.get("code")) if isinstance(document, dict) else ""


async def _read_limited(response: httpx.Response, limit: int) -> bytes | None:
    """The answer's body, or None past `limit` bytes (not read further: a receiver's answer is small)."""
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


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

    async def post_batch(self, http: httpx.AsyncClient, webhook: WebhookRecord, rows: Sequence[OutboxRow],
                         target: DeliveryTarget | None = None) -> list[tuple[Outcome, int | None]]:
        """The outcome of each row of one batch POST now, in order, with the receiver's status.

        The body holds every row's body byte for byte (as its single POST would carry it); the batch is signed
        once, under its own id. A non-2xx answer (or none) is every row's outcome, judged as a single post's."""
        batch_id = "batch_" + secrets.token_hex(12)
        head = json.dumps({"batch_id": batch_id, "project_id": rows[0].project_id,
                           "account_phone": rows[0].phone}, ensure_ascii=False, separators=(",", ":"))
        body = head[:-1].encode() + b',"events":[' + b",".join(row.body for row in rows) + b"]}"
        headers = delivery_headers(webhook.secret, batch_id, int(time.time()), body,
                                   with_secret=webhook.secret_header)
        started = time.perf_counter()
        target = target or DeliveryTarget(webhook.url)
        try:
            async with http.stream("POST", target.url, content=body, headers={**headers, **target.headers},
                                   extensions=target.extensions or None) as response:
                answer = await _read_limited(response, batch_results.MAX_ANSWER_BYTES)
        except httpx.HTTPError as exc:
            self._observe(Verdict.RETRY, started, None, len(rows))
            # The type only: an exception's text may quote what the other side sent.
            return [(judge_transport_error(type(exc).__name__, row.attempts + 1, self._schedule), None)
                    for row in rows]
        status = response.status_code
        if not 200 <= status < 300:
            code = _code_in(answer)
            judged = [judge_response(status, response.headers.get("retry-after"), row.attempts + 1,
                                     self._schedule, code) for row in rows]
            self._observe(judged[0].verdict, started, status, len(rows))
            return [(outcome, status) for outcome in judged]
        answers = batch_results.read_answers(answer)
        if answers is None or any(row.event_id not in answers for row in rows):
            # Those events are retried; the log says how many, never what either side wrote.
            missing = len(rows) if answers is None else sum(row.event_id not in answers for row in rows)
            log.warning("batch %s to %s/%s: %d of %d events without a valid result; they are retried",
                        batch_id, rows[0].project_id, rows[0].phone, missing, len(rows))
        self._observe(Verdict.DELIVERED, started, status, len(rows))
        judged = batch_results.outcomes(answers, [(row.event_id, row.attempts + 1) for row in rows],
                                        self._schedule)
        return [(outcome, status) for outcome in judged]

    def _observe(self, verdict: Verdict, started: float, status: int | None,
                 batch_events: int | None = None) -> None:
        result = DeliveryResult(verdict=verdict, latency=time.perf_counter() - started, status=status,
                                batch_events=batch_events)
        for observer in self._observers:
            observer(result)
