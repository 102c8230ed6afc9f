"""The retry schedule the contract promises, checked without a clock or a network."""

from __future__ import annotations

import email.utils
import random

import pytest

from crm_server.webhooks.policy import RetrySchedule, Verdict, judge_response, judge_transport_error, parse_retry_after

DEFAULT = RetrySchedule()


def test_first_retry_comes_within_five_seconds() -> None:
    rng = random.Random(7)
    assert all(0 < DEFAULT.delay(1, rng=rng) <= 5 for _ in range(1000))


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [DEFAULT.delay(attempt, rng=rng) for attempt in range(1, 30)]
    assert delays[5] > delays[0]
    assert max(delays) <= DEFAULT.max_delay
    assert delays[-1] >= DEFAULT.max_delay / 2


def test_default_window_is_at_least_a_day() -> None:
    assert DEFAULT.window >= 24 * 3600
    assert not DEFAULT.gives_up(first_attempt_at=0, now=23 * 3600)
    assert DEFAULT.gives_up(first_attempt_at=0, now=24 * 3600)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_delivered(status: int) -> None:
    assert judge_response(status, None, 1, DEFAULT).verdict is Verdict.DELIVERED


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried(status: int) -> None:
    outcome = judge_response(status, None, 1, DEFAULT)
    assert outcome.verdict is Verdict.RETRY and 0 < outcome.delay <= 5
    assert str(status) in (outcome.error or "")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_4xx_are_dead_letters_at_once(status: int) -> None:
    assert judge_response(status, None, 1, DEFAULT).verdict is Verdict.DEAD


def test_gone_disables() -> None:
    assert judge_response(410, None, 1, DEFAULT).verdict is Verdict.GONE


def test_retry_after_seconds_and_dates_are_honoured() -> None:
    assert judge_response(429, "7", 1, DEFAULT).delay == 7
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30, abs=1)
    assert parse_retry_after("soon") is None
    assert judge_response(503, "999999", 1, DEFAULT).delay == DEFAULT.max_delay


def test_transport_errors_are_retried() -> None:
    outcome = judge_transport_error("ConnectError: refused", 1, DEFAULT)
    assert outcome.verdict is Verdict.RETRY and outcome.delay <= 5


def test_a_refusal_is_kept_as_its_status_and_code_never_the_receivers_text() -> None:
    import httpx

    from crm_server.webhooks.posting import _error_code

    assert judge_response(422, None, 1, DEFAULT, "VALIDATION_ERROR").error == "HTTP 422 VALIDATION_ERROR"
    assert judge_response(500, None, 1, DEFAULT).error == "HTTP 500"
    said = httpx.Response(422, json={"code": "VALIDATION_ERROR", "error": "Hi, my card number is 4111 1111"})
    assert _error_code(said) == "VALIDATION_ERROR"
    assert _error_code(httpx.Response(400, json={"code": "<b>not a code</b>"})) == ""
    assert _error_code(httpx.Response(502, text="<html>upstream body</html>")) == ""
