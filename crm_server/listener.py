"""`IncomingListener`: writes each incoming message to the outbox, then wakes the delivery worker.

The AccountManager awaits it for every message in order and does not let Telethon persist an update state past a
message until this returned, so a message is either in the outbox or will be fetched again after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from crm_server.incoming import IncomingMessage
from crm_server.store.outbox import OutboxTable

log = logging.getLogger(__name__)

# Backoff while the store refuses a write (locked, restarting): the account's updates wait, nothing is dropped.
RETRY_DELAYS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)


class IncomingListener:
    def __init__(self, outbox: OutboxTable, wake: Callable[[], None],
                 on_enqueued: Callable[[int], None] | None = None) -> None:
        self._outbox = outbox
        self._wake = wake
        self._on_enqueued = on_enqueued

    async def __call__(self, message: IncomingMessage) -> None:
        attempt = 0
        while True:
            try:
                added = await self._outbox.enqueue([message.outbox_event()])
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                # Type only: the exception text may quote the payload (a client's message).
                log.warning("outbox write failed (%s); retrying in %.2fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
        if self._on_enqueued is not None:
            self._on_enqueued(added)
        if added:
            self._wake()
