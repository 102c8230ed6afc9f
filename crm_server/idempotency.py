"""`IdempotencyKeys`: what an Idempotency-Key means for `/telegram/send`, over the store's claims.

The first request with a key owns it and sends; a later one gets the first success again, or waits while the first
is in flight. A failed send frees its key, so the caller may retry with it; a successful one completes it in the
transaction that remembers the message (`SendCompletion`, `Store.record_send`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crm_server import errors
from crm_server.store.idempotency import IdempotencyTable
from crm_server.telegram.sending import SendResult

# How long a request waits for a concurrent request with the same Idempotency-Key to finish.
IDEMPOTENCY_WAIT_SECONDS = 15.0


@dataclass
class SendCompletion:
    """A send's Idempotency-Key and how its success answer is made from what Telegram answered: the manager stores
    the answer under the key in the transaction that remembers the message (`Store.record_send`), and the route
    answers `answer`, the same dict."""

    key: str
    answer_of: Callable[[SendResult], dict[str, Any]]
    answer: dict[str, Any] | None = field(default=None, init=False)

    def complete(self, result: SendResult) -> tuple[str, dict[str, Any]]:
        self.answer = self.answer_of(result)
        return self.key, self.answer


class IdempotencyKeys:
    def __init__(self, table: IdempotencyTable, wait_seconds: float = IDEMPOTENCY_WAIT_SECONDS) -> None:
        self._table = table
        self._wait_seconds = wait_seconds

    async def replay_or_claim(self, project_id: str, key: str) -> dict[str, Any] | None:
        """The stored first response for this key, or None once this request owns the key and must send."""
        deadline = time.monotonic() + self._wait_seconds
        while True:
            claim = await self._table.claim(project_id, key)
            if claim.claimed:
                return None
            if claim.response is not None:
                return claim.response
            if time.monotonic() > deadline:
                raise errors.IdempotencyInProgressError(retry_after=1)
            await asyncio.sleep(0.05)

    async def release(self, project_id: str, key: str) -> None:
        """The send failed: forget the key (shielded, so a cancelled request still frees it)."""
        await asyncio.shield(self._table.release(project_id, key))
