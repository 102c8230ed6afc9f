"""`ReplayCache`: signed deliveries this process already stored, by webhook-id, for as long as a signature is valid.

A captured delivery replayed within the tolerance window verifies; it is answered again from memory (the same
answer, `duplicate: true`) instead of reaching the database, so replaying costs the attacker more than it costs us.
Only stored deliveries are remembered: a retry after a failure must be processed, not answered.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

MAX_ENTRIES = 50_000


class ReplayCache:
    def __init__(self, window_seconds: float, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window_seconds
        self._max = max_entries
        self._clock = clock
        self._answers: OrderedDict[tuple[str, str], tuple[dict[str, Any], float]] = OrderedDict()

    def seen(self, integration_id: str, webhook_id: str) -> dict[str, Any] | None:
        """The answer given to this delivery, while its signature could still verify; else None."""
        entry = self._answers.get((integration_id, webhook_id))
        if entry is None:
            return None
        answer, expires = entry
        if expires <= self._clock():
            del self._answers[(integration_id, webhook_id)]
            return None
        return answer

    def remember(self, integration_id: str, webhook_id: str, answer: dict[str, Any]) -> None:
        now = self._clock()
        # Twice the window: a timestamp may be up to the tolerance in the future as well as in the past.
        self._answers[(integration_id, webhook_id)] = (answer, now + 2 * self._window)
        self._answers.move_to_end((integration_id, webhook_id))
        while len(self._answers) > self._max:
            self._answers.popitem(last=False)
