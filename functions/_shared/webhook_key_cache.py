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

Concurrent misses for one key share one lookup (`get_or_load`): a burst after idle cost one database round trip per
request before (12 concurrent webhooks, 12 lookups), the 4x CPU of a warm burst. A failed lookup fails all its waiters
and is not kept; a lookup that was under way when this process changed an integration is answered but not remembered.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from functions._shared.rows import IntegrationRow


class WebhookKeyCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max_entries
        self._clock = clock
        # Inserted in expiry order (one TTL for all), so the first entry is always the next to expire.
        self._entries: OrderedDict[str, tuple[float, IntegrationRow]] = OrderedDict()
        # The lookups under way, by key: misses arriving meanwhile await the same one.
        self._lookups: dict[str, asyncio.Future[IntegrationRow | None]] = {}
        # Bumped by every change this process makes: a lookup started before one is answered, never remembered.
        self._changes = 0

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

    async def get_or_load(self, webhook_key: str,
                          lookup: Callable[[], Awaitable[IntegrationRow | None]]) -> IntegrationRow | None:
        """The remembered integration, else the answer of the one lookup under way for this key (started now if
        none is). The lookup runs as its own task: a waiter that gives up (its client hung up) cancels only itself."""
        remembered = self.get(webhook_key)
        if remembered is not None:
            return remembered
        pending = self._lookups.get(webhook_key)
        if pending is None:
            pending = asyncio.ensure_future(self._look_up(webhook_key, lookup, self._changes))
            self._lookups[webhook_key] = pending
            pending.add_done_callback(lambda done: self._lookup_done(webhook_key, done))
        return await asyncio.shield(pending)

    async def _look_up(self, webhook_key: str, lookup: Callable[[], Awaitable[IntegrationRow | None]],
                       changes_before: int) -> IntegrationRow | None:
        integration = await lookup()
        if integration is not None and self._changes == changes_before:
            self.remember(webhook_key, integration)
        return integration

    def _lookup_done(self, webhook_key: str, done: asyncio.Future[IntegrationRow | None]) -> None:
        if self._lookups.get(webhook_key) is done:
            del self._lookups[webhook_key]
        if not done.cancelled():
            done.exception()  # retrieved here: when every waiter gave up, nobody else would

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
        self._changes += 1
        self._lookups.clear()  # their waiters keep their answer; later misses look the new row up
        for key in [key for key, (_, row) in self._entries.items() if row.id == integration_id]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
