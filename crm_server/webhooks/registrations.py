"""`WebhookRegistry`: where each account's events are delivered, with the secret they are signed with.

Connect registers (keeping an existing secret when none is given, generating one for a new registration); pause
holds delivery (events stay pending, never dead) until resumed; disconnect removes the registration and what was
still waiting for it. The status route reads every registration of a project with its delivery health in one query.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Protocol

from crm_server.store.outbox import OutboxTable
from crm_server.store.webhooks import UNCHANGED, BatchSettings, Unchanged, WebhookStatusRecord, WebhookTable
from crm_server.webhooks.subscriptions import Subscriptions


class Lanes(Protocol):
    """The delivery worker, as the registry needs it (crm_server.webhooks.worker.WebhookDelivery)."""

    def wake(self) -> None: ...

    def halt(self, project_id: str, phone: str) -> None: ...

    def delivered_unrecorded(self, project_id: str, phone: str) -> set[int]: ...


@dataclass(frozen=True)
class Registered:
    """What a connect made of the registration."""

    generated_secret: str | None  # only when this call generated it
    batch: BatchSettings | None  # its batching now (None: one event per POST)


class WebhookRegistry:
    def __init__(self, table: WebhookTable, outbox: OutboxTable, lanes: Lanes,
                 subscriptions: Subscriptions | None = None) -> None:
        self._table = table
        self._outbox = outbox
        self._lanes = lanes
        self._subscriptions = subscriptions

    async def register(self, project_id: str, phone: str, url: str, secret: str | None, *,
                       secret_header: bool = True, events: tuple[str, ...] | None = None,
                       batch: BatchSettings | None | Unchanged = UNCHANGED) -> Registered:
        """Register (or re-enable and resume) the webhook.

        `secret_header` False: deliveries carry only the signature, never the secret itself. `events`: the types
        it receives (None keeps those of an existing registration; a new one receives `message` only). `batch`:
        several events per POST (None: one; UNCHANGED keeps an existing registration's, a new one gets one)."""
        generated = None
        if secret is None:
            existing = await self._table.get(project_id, phone)
            if existing is not None:
                secret = existing.secret
            else:
                secret = generated = secrets.token_urlsafe(32)
        stored_batch = await self._table.upsert(project_id, phone, url, secret, secret_header=secret_header,
                                                events=events, batch=batch)
        if self._subscriptions is not None:
            self._subscriptions.forget(project_id, phone)
        # A (re-)registered webhook may have messages waiting, e.g. after a 410 disabled the old one.
        self._lanes.wake()
        return Registered(generated_secret=generated, batch=stored_batch)

    async def pause(self, project_id: str, phone: str, paused: bool) -> int | None:
        """Pause or resume; the account's pending events, or None when it has no registration."""
        if not await self._table.set_paused(project_id, phone, paused):
            return None
        if paused:
            self._lanes.halt(project_id, phone)
        else:
            self._lanes.wake()  # in chat order, from each chat's head
        statuses = await self._table.statuses(project_id, phone)
        return statuses[phone].health.pending if phone in statuses else 0

    async def disconnect(self, project_id: str, phone: str) -> int:
        """Remove the registration and the events still waiting for it; returns how many were dropped.

        Events of the account arriving later wait, pending, for a new registration (as before any connect)."""
        self._lanes.halt(project_id, phone)
        # Rows the webhook took a moment ago are recorded a few times a second: not dropped, not counted.
        dropped = await self._outbox.drop_pending(project_id, phone,
                                                  keep=self._lanes.delivered_unrecorded(project_id, phone))
        await self._table.delete(project_id, phone)
        if self._subscriptions is not None:
            self._subscriptions.forget(project_id, phone)
        return dropped

    async def statuses(self, project_id: str, phone: str | None = None) -> dict[str, WebhookStatusRecord]:
        """phone → registration and delivery health (pending, dead letters, last success, last error)."""
        return await self._table.statuses(project_id, phone)
