"""Pacing towards Telegram: per-account sends (a token bucket that refuses what a careful human operator would not
send, before Telegram's own FloodWait would) and connection starts (a restart is not a burst of logins).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable


class TokenBucket:
    """`capacity` sends back to back, refilled at `rate_per_second`; `take()` never waits, it says how long to."""

    def __init__(self, rate_per_second: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_second
        self._capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    def take(self) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is available (nothing taken)."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


class ConnectPacer:
    """At most `concurrency` connections being made at once, their starts at least `stagger_seconds` apart."""

    def __init__(self, concurrency: int, stagger_seconds: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._gate = asyncio.Semaphore(concurrency)
        self._stagger_seconds = stagger_seconds
        self._clock = clock
        self._sleep = sleep
        self._stagger_lock = asyncio.Lock()
        self._last_start = float("-inf")

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Held while one connection is made."""
        async with self._gate:
            async with self._stagger_lock:
                delay = self._last_start + self._stagger_seconds - self._clock()
                if delay > 0:
                    await self._sleep(delay)
                self._last_start = self._clock()
            yield
