"""What a receiver's answer to a batch means for each of its events: only a valid `ok: true` delivers; `retry`
retries; `ok: false` alone is a dead letter; anything unreadable or missing is retried, never delivered."""

from __future__ import annotations

import json

from crm_server.webhooks.batch_results import MAX_ANSWER_BYTES, outcomes, read_answers
from crm_server.webhooks.policy import RetrySchedule, Verdict

SCHEDULE = RetrySchedule(first_delay=2.0, max_delay=60.0)


def verdicts(body: bytes | None, *event_ids: str) -> list[Verdict]:
    return [outcome.verdict for outcome in outcomes(read_answers(body), [(e, 1) for e in event_ids], SCHEDULE)]


def answer(*results: object) -> bytes:
    return json.dumps({"results": list(results)}).encode()


def test_each_event_gets_the_verdict_of_its_own_result() -> None:
    body = answer({"event_id": "a", "ok": True}, {"event_id": "b", "ok": True, "duplicate": True},
                  {"event_id": "c", "ok": False, "retry": True}, {"event_id": "d", "ok": False, "retry": False},
                  {"event_id": "e", "ok": False})
    assert verdicts(body, "a", "b", "c", "d", "e") == [Verdict.DELIVERED, Verdict.DELIVERED, Verdict.RETRY,
                                                       Verdict.DEAD, Verdict.DEAD]


def test_a_retry_waits_the_usual_backoff_and_a_dead_letter_keeps_only_the_code() -> None:
    body = answer({"event_id": "c", "ok": False, "retry": True, "error": {"code": "BUSY", "message": "x"}},
                  {"event_id": "d", "ok": False, "error": {"code": "BAD_EVENT", "message": "the text was: hi"}},
                  {"event_id": "f", "ok": False, "error": {"code": "not a code; text", "message": "m"}})
    retry, dead, uncoded = outcomes(read_answers(body), [("c", 1), ("d", 1), ("f", 1)], SCHEDULE)
    assert 1.0 <= retry.delay <= 2.0 and retry.error == "batch result: retry BUSY"
    assert dead.error == "batch result: rejected BAD_EVENT"
    assert uncoded.error == "batch result: rejected"


def test_events_without_a_valid_result_are_retried_never_delivered() -> None:
    assert verdicts(answer({"event_id": "a", "ok": True}), "a", "b") == [Verdict.DELIVERED, Verdict.RETRY]
    malformed = answer({"event_id": "a", "ok": "yes"}, {"event_id": 5, "ok": True}, "b",
                       {"event_id": "c", "ok": True, "retry": "no"})
    assert verdicts(malformed, "a", "b", "c") == [Verdict.RETRY] * 3
    for body in (b"", b"not json", b"[]", b'{"success": true}', b'{"results": {}}', None,
                 answer({"event_id": "a", "ok": True}) + b" " * MAX_ANSWER_BYTES):
        assert verdicts(body, "a") == [Verdict.RETRY]


def test_the_first_result_of_an_event_counts() -> None:
    body = answer({"event_id": "a", "ok": False}, {"event_id": "a", "ok": True})
    assert verdicts(body, "a") == [Verdict.DEAD]
