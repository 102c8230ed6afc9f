"""Per-account send pacing: a token bucket that refuses sends a careful human operator would not make.

It answers before Telegram's own FloodWait would, so an account is never pushed into a Telegram penalty.
"""

from __future__ import annotations

import time
from collections.abc import Callable


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
