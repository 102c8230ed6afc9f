"""A short-lived, bounded memory of enabled integrations by webhook key, so a burst of webhooks for one account costs
one lookup per few seconds instead of one database round trip each.

The staleness trade-off, and why it is safe:
- Disabling or deleting an integration (or moving it to another organization) takes effect at once for stores:
  `ingest_telegram_webhook` re-checks the integration in the same transaction and refuses (404). Within the TTL such
  a webhook may be refused 401 instead of 404 when its secret is wrong too: both refuse it.
- A changed secret or webhook key is seen within `ttl_seconds` (a few seconds at most): until then the old secret is
  accepted and the new one refused 401, which the sender retries. Changes this process makes itself
  (`IntegrationStore.insert`/`update`) forget the integration at once.
- Only enabled integrations are remembered, so re-enabling one takes effect at once; unknown keys are never
  remembered, so a key created a moment ago is found at once.
- At most `max_entries` keys are kept (the oldest go first), so probing with random keys cannot grow it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from functions._shared.rows import IntegrationRow


class WebhookKeyCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        # Inserted in expiry order (one TTL for all), so the first entry is always the next to expire.
        self._entries: OrderedDict[str, tuple[float, IntegrationRow]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    def get(self, webhook_key: str) -> IntegrationRow | None:
        entry = self._entries.get(webhook_key)
        if entry is None:
            return None
        expires_at, integration = entry
        if self._clock() >= expires_at:
            del self._entries[webhook_key]
            return None
        return integration

    def remember(self, webhook_key: str, integration: IntegrationRow) -> None:
        if not self.enabled or not integration.is_enabled:
            return
        now = self._clock()
        self._entries.pop(webhook_key, None)
        self._entries[webhook_key] = (now + self._ttl, integration)
        # Drop what expired (all at the front) and, past the bound, the oldest.
        while self._entries:
            first_key, (expires_at, _) = next(iter(self._entries.items()))
            if expires_at > now and len(self._entries) <= self._max_entries:
                break
            del self._entries[first_key]

    def forget_integration(self, integration_id: str) -> None:
        """After this process changed the integration: its next webhook reads the new row."""
        for key in [key for key, (_, row) in self._entries.items() if row.id == integration_id]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
