"""The benches' receiver that costs nothing answers a batch as telegram-crm-webhook does, so crm_server takes its
events as delivered (a batch answered `{}` is retried event by event), and counts each event once."""

from __future__ import annotations

import json

import httpx

from bench.receiver import FastReceiver
from crm_server.webhooks import batch_results
from crm_server.webhooks.policy import RetrySchedule, Verdict


def _batch(*event_ids: str) -> bytes:
    return json.dumps({"batch_id": "batch_1", "project_id": "p", "account_phone": "+1",
                       "events": [{"event_id": event_id, "type": "message"} for event_id in event_ids]}).encode()


def test_a_batch_is_answered_per_event_and_counted_once() -> None:
    with FastReceiver() as receiver, httpx.Client() as http:
        first = http.post(receiver.url, content=_batch("a", "b", "c"), headers={"webhook-id": "batch_1"})
        again = http.post(receiver.url, content=_batch("c", "d"), headers={"webhook-id": "batch_2"})
        assert receiver.wait_for(4, timeout=10) >= 0
        answers = batch_results.read_answers(again.content)
    assert first.status_code == 200
    assert answers is not None and set(answers) == {"c", "d"}
    assert [row["duplicate"] for row in again.json()["results"]] == [True, False]
    judged = batch_results.outcomes(answers, [("c", 1), ("d", 1)], RetrySchedule())
    assert [outcome.verdict for outcome in judged] == [Verdict.DELIVERED, Verdict.DELIVERED]
    assert receiver.accepted == 4


def test_single_posts_count_their_webhook_id_once() -> None:
    with FastReceiver() as receiver, httpx.Client() as http:
        for event_id in ("x", "x", "y"):
            assert http.post(receiver.url, content=b'{"event_id":"%s"}' % event_id.encode(),
                             headers={"webhook-id": event_id}).json() == {}
        receiver.wait_for(2, timeout=10)
        assert receiver.accepted == 2


def test_while_unavailable_nothing_is_counted() -> None:
    with FastReceiver() as receiver, httpx.Client() as http:
        receiver.available = False
        assert http.post(receiver.url, content=_batch("a"), headers={"webhook-id": "batch_1"}).status_code == 503
        assert receiver.accepted == 0
