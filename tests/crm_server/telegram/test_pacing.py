"""The per-account token bucket: a burst, then the configured pace, and an honest wait when empty."""

from __future__ import annotations

import pytest

from crm_server.telegram.pacing import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_the_burst_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=0.5, capacity=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(2.0)


def test_tokens_come_back_at_the_configured_rate_and_never_beyond_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=0.5, capacity=2, clock=clock)
    bucket.take(), bucket.take()
    clock.now += 1.0
    assert bucket.take() == pytest.approx(1.0)  # half a token back: refused, nothing taken
    clock.now += 1.0
    assert bucket.take() == 0.0
    clock.now += 3600
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, pytest.approx(2.0)]


def test_thirty_a_minute_sustained() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_second=30 / 60, capacity=1, clock=clock)
    granted = 0
    for _ in range(600):  # ten minutes in 1 s steps, trying every second
        if bucket.take() == 0.0:
            granted += 1
        clock.now += 1.0
    assert granted == 300
