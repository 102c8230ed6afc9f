"""Pacing: the per-account token bucket (a burst, then the configured pace, an honest wait when empty), and connection
starts (bounded at once, staggered in time)."""

from __future__ import annotations

import asyncio

import pytest

from crm_server.telegram.pacing import ConnectPacer, TokenBucket


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


async def test_connection_starts_are_staggered_by_the_configured_gap() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    pacer = ConnectPacer(concurrency=5, stagger_seconds=0.5, clock=clock, sleep=sleep)
    starts = []
    for _ in range(3):
        async with pacer.slot():
            starts.append(clock.now)
        clock.now += 0.1
    assert slept == [pytest.approx(0.4), pytest.approx(0.4)]  # the first starts at once
    assert [b - a for a, b in zip(starts, starts[1:])] == [pytest.approx(0.5)] * 2


async def test_no_more_connections_than_the_concurrency_are_made_at_once() -> None:
    pacer = ConnectPacer(concurrency=2, stagger_seconds=0.0)
    inside = 0
    most = 0

    async def connect() -> None:
        nonlocal inside, most
        async with pacer.slot():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(connect() for _ in range(6)))
    assert most == 2
