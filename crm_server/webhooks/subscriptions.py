"""`Subscriptions`: whether an account's registration receives an event type, asked before the event is enqueued.

`message` events are always enqueued (they wait for a registration, as before types existed). Every other type is
enqueued only while a registration asks for it: nobody would ever receive it otherwise. Answers are cached a few
seconds per account (a registration changed by another instance applies within that), and dropped at once when
this instance changes the registration.
"""

from __future__ import annotations

import time

from crm_server.store.webhooks import WebhookTable
from crm_server.webhooks.events import MESSAGE

CACHE_SECONDS = 5.0


class Subscriptions:
    def __init__(self, table: WebhookTable, cache_seconds: float = CACHE_SECONDS) -> None:
        self._table = table
        self._cache_seconds = cache_seconds
        self._cached: dict[tuple[str, str], tuple[float, tuple[str, ...]]] = {}

    async def wants(self, project_id: str, phone: str, event_type: str) -> bool:
        if event_type == MESSAGE:
            return True
        key = (project_id, phone)
        now = time.monotonic()
        cached = self._cached.get(key)
        if cached is None or cached[0] < now:
            record = await self._table.get(project_id, phone)
            events = record.events if record is not None else ()
            self._cached[key] = cached = (now + self._cache_seconds, events)
        return event_type in cached[1]

    def forget(self, project_id: str, phone: str) -> None:
        """The registration changed here: the next event asks the store again."""
        self._cached.pop((project_id, phone), None)
