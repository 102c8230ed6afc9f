"""`DeliveryLog`: the operator's view of the outbox: rows by state, and a dead letter put back in its queue.

It speaks the store's states (`OutboxState`); the routes translate them to the contract's words.
"""

from __future__ import annotations

from collections.abc import Callable

from crm_server.store.outbox import DeliveryRecord, OutboxTable
from crm_server.store.schema import OutboxState

__all__ = ["DeliveryLog", "DeliveryRecord", "OutboxState"]


class DeliveryLog:
    def __init__(self, outbox: OutboxTable, on_retry: Callable[[], None]) -> None:
        self._outbox = outbox
        self._on_retry = on_retry  # the worker looks at once instead of at its next poll

    async def list(self, project_id: str | None, state: OutboxState, limit: int) -> list[DeliveryRecord]:
        """A project's rows in `state` (every project's with None), oldest first; delivered: the last hour's, newest
        first."""
        return await self._outbox.list(project_id, state, limit=limit)

    async def retry(self, delivery_id: int, project_id: str | None) -> bool:
        """Put a dead letter back at its chat's head; False if `project_id` (None: any) has no such dead letter."""
        if not await self._outbox.retry(delivery_id, project_id):
            return False
        self._on_retry()
        return True

    async def pending_count(self) -> int:
        return await self._outbox.pending_count()
