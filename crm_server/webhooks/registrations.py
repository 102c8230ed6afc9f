"""`WebhookRegistry`: where each account's events are delivered, with the secret they are signed with.

Connect registers (keeping an existing secret when none is given, generating one for a new registration), logout
unregisters, and the status route reads every registration of a project with its delivery health in one query.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from crm_server.store.webhooks import WebhookStatusRecord, WebhookTable


class WebhookRegistry:
    def __init__(self, table: WebhookTable, on_registered: Callable[[], None]) -> None:
        self._table = table
        # A (re-)registered webhook may have messages waiting, e.g. after a 410 disabled the old one.
        self._on_registered = on_registered

    async def register(self, project_id: str, phone: str, url: str, secret: str | None) -> str | None:
        """Register (or re-enable) the webhook; returns the secret when this call generated it (shown once)."""
        generated = None
        if secret is None:
            existing = await self._table.get(project_id, phone)
            if existing is not None:
                secret = existing.secret
            else:
                secret = generated = secrets.token_urlsafe(32)
        await self._table.upsert(project_id, phone, url, secret)
        self._on_registered()
        return generated

    async def unregister(self, project_id: str, phone: str) -> None:
        await self._table.delete(project_id, phone)

    async def statuses(self, project_id: str, phone: str | None = None) -> dict[str, WebhookStatusRecord]:
        """phone → registration and delivery health (pending, dead letters, last success, last error)."""
        return await self._table.statuses(project_id, phone)
