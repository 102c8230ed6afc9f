"""What a webhook answer means for the outbox row: delivered, retry later (when), dead letter, or receiver gone.

Pure functions, so the schedule the contract promises (first retry within 5 s, capped backoff with jitter,
Retry-After honoured, a window of at least 24 h) is tested without a clock or a network.
"""

from __future__ import annotations

import email.utils
import enum
import random
import time
from dataclasses import dataclass

RETRYABLE_STATUSES = frozenset({408, 425, 429})


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    GONE = "gone"  # 410: the receiver says this webhook no longer exists; stop until it is registered again


@dataclass(frozen=True)
class RetrySchedule:
    first_delay: float = 2.0  # with jitter the first retry lands between 1 and 2 s: within the contract's 5 s
    max_delay: float = 900.0
    window: float = 24 * 3600.0  # keep retrying at least this long after the first attempt

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempt`-th failed try (1-based): exponential, capped, with jitter."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        base = min(self.first_delay * (2 ** (attempt - 1)), self.max_delay)
        # "Equal jitter": spread retries of many rows over [base/2, base] so a recovered receiver is not stampeded.
        return base / 2 + (rng or random).random() * base / 2

    def gives_up(self, first_attempt_at: float, now: float) -> bool:
        return now - first_attempt_at >= self.window


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    delay: float = 0.0
    error: str | None = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(moment.timestamp() - (time.time() if now is None else now), 0.0)


def judge_response(status: int, retry_after: str | None, attempt: int, schedule: RetrySchedule,
                   code: str = "") -> Outcome:
    """`code`: the receiver's machine code, if it gave one; its error is the status and that code, nothing of its
    text (operators read `last_error`, and a receiver's body could carry anything)."""
    if 200 <= status < 300:
        return Outcome(Verdict.DELIVERED)
    error = f"HTTP {status}" + (f" {code}" if code else "")
    if status == 410:
        return Outcome(Verdict.GONE, error=error)
    if status in RETRYABLE_STATUSES or status >= 500:
        return Outcome(Verdict.RETRY, schedule.delay(attempt, parse_retry_after(retry_after)), error)
    return Outcome(Verdict.DEAD, error=error)


def judge_transport_error(error: str, attempt: int, schedule: RetrySchedule) -> Outcome:
    """Timeouts, refused connections, resets: the receiver may come back, so retry."""
    return Outcome(Verdict.RETRY, schedule.delay(attempt), error)
