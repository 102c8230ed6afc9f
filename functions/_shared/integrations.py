"""Reading and writing messenger integrations (settings sealed at rest, open in memory), loading clients, and choosing
which integration sends.

The choice: the caller's explicit integration; else the one that received the client's last incoming message, if
enabled; else the organization's primary; else its oldest enabled one. All queries filter by organization, because
the service role sees every organization (the webhook's lookup by key is the one exception: the key names the
integration, and the handler then checks the payload's organization against it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from supabase import AsyncClient

from functions._shared.database import UNIQUE_VIOLATION, first_row, rows
from functions._shared.errors import (
    ClientNotFoundError,
    DatabaseError,
    IntegrationDisabledError,
    IntegrationNotFoundError,
)
from functions._shared.sealed_settings import SettingsSealer
from functions._shared.rows import ClientRow, IntegrationRow, Provider
from functions._shared.webhook_key_cache import WebhookKeyCache

MESSENGER = "telegram"
TABLE = "messenger_integrations"
INTEGRATION_COLUMNS = ("id, organization_id, messenger_type, provider, name, is_primary, is_enabled, webhook_key, "
                       "settings, created_at, account_state, account_state_reason, account_state_at")
CLIENT_COLUMNS = ("id, organization_id, name, phone, telegram_user_id, telegram_chat_id, telegram_username, "
                  "is_active")
ALL_PROVIDERS: tuple[Provider, ...] = ("telegram_crm", "wappi")


async def load_client(db: AsyncClient, organization_id: str, client_id: str) -> ClientRow:
    """The organization's client; another organization's client is 404, exactly like a missing one."""
    row = await first_row(
        db.table("clients").select(CLIENT_COLUMNS).eq("id", client_id).eq("organization_id", organization_id)
        .limit(1), "loading the client")
    if row is None:
        raise ClientNotFoundError(field="clientId")
    return ClientRow.model_validate(row)


async def last_incoming_integration_id(db: AsyncClient, organization_id: str, client_id: str) -> str | None:
    # The very last incoming message decides; if its integration was deleted since, the primary takes over.
    row = await first_row(
        db.table("chat_messages").select("integration_id").eq("organization_id", organization_id)
        .eq("client_id", client_id).eq("is_outgoing", False)
        .order("created_at", desc=True).limit(1), "finding the client's last incoming message")
    return str(row["integration_id"]) if row and row.get("integration_id") else None


class IntegrationStore:
    """The functions' one way to `messenger_integrations`: rows come back as `IntegrationRow` with their settings
    opened, and settings go in sealed, so handlers never see a sealed value nor write a secret in clear."""

    def __init__(self, db: AsyncClient, sealer: SettingsSealer, webhook_key_cache_seconds: float = 0.0) -> None:
        self._db = db
        self._sealer = sealer
        self._by_webhook_key = WebhookKeyCache(webhook_key_cache_seconds)

    # --- reading --------------------------------------------------------------------------------------------------

    async def load(self, organization_id: str, integration_id: str) -> IntegrationRow:
        """The organization's Telegram integration; another organization's is 404, exactly like a missing one."""
        row = await first_row(
            self._db.table(TABLE).select(INTEGRATION_COLUMNS).eq("id", integration_id)
            .eq("organization_id", organization_id).eq("messenger_type", MESSENGER).limit(1),
            "loading the integration")
        if row is None:
            raise IntegrationNotFoundError(field="integrationId")
        return self._opened(row)

    async def telegram_integrations(self, organization_id: str) -> list[IntegrationRow]:
        """The organization's Telegram integrations, primary first, then oldest first."""
        found = await rows(
            self._db.table(TABLE).select(INTEGRATION_COLUMNS).eq("organization_id", organization_id)
            .eq("messenger_type", MESSENGER).order("is_primary", desc=True).order("created_at").order("id"),
            "listing the organization's integrations")
        return [self._opened(row) for row in found]

    async def find_by_webhook_key(self, webhook_key: str) -> IntegrationRow | None:
        """The integration a webhook is for; enabled ones are remembered briefly (see webhook_key_cache.py for why
        that is safe), so the caller must treat the answer as possibly a few seconds old. Concurrent misses for one
        key share one lookup."""
        return await self._by_webhook_key.get_or_load(webhook_key, lambda: self._look_up_webhook_key(webhook_key))

    async def _look_up_webhook_key(self, webhook_key: str) -> IntegrationRow | None:
        row = await first_row(
            self._db.table(TABLE).select(INTEGRATION_COLUMNS).eq("webhook_key", webhook_key).limit(1),
            "finding the integration by webhook key")
        return None if row is None else self._opened(row)

    # --- choosing -------------------------------------------------------------------------------------------------

    async def choose(self, organization_id: str, client: ClientRow, explicit_id: str | None,
                     providers: Collection[Provider] = ALL_PROVIDERS) -> IntegrationRow:
        """The integration that sends to `client` (see the module docstring)."""
        if explicit_id is not None:
            integration = await self.load(organization_id, explicit_id)
            if integration.provider not in providers:
                raise IntegrationNotFoundError(f"Integration {explicit_id} is not a {' or '.join(providers)} "
                                               f"integration", field="integrationId")
            if not integration.is_enabled:
                raise IntegrationDisabledError(field="integrationId")
            return integration
        candidates = [integration for integration in await self.telegram_integrations(organization_id)
                      if integration.is_enabled and integration.provider in providers]
        last_incoming = await last_incoming_integration_id(self._db, organization_id, client.id)
        for integration in candidates:
            if integration.id == last_incoming:
                return integration
        if candidates:
            # Ordered primary first, then oldest.
            return candidates[0]
        raise IntegrationNotFoundError("The organization has no enabled Telegram integration; connect one first")

    async def failover(self, organization_id: str, failed: IntegrationRow,
                       providers: Collection[Provider] = ALL_PROVIDERS) -> IntegrationRow | None:
        """Another enabled Telegram integration of the organization to try once after `failed`, primary first."""
        for integration in await self.telegram_integrations(organization_id):
            if integration.id != failed.id and integration.is_enabled and integration.provider in providers:
                return integration
        return None

    # --- writing --------------------------------------------------------------------------------------------------

    async def insert(self, organization_id: str, *, provider: str, name: str, settings: Mapping[str, Any],
                     webhook_key: str | None = None) -> IntegrationRow:
        """A new enabled Telegram integration with `settings` sealed. The organization's first one (or the first
        while none is primary) becomes primary."""
        row: dict[str, Any] = {"organization_id": organization_id, "messenger_type": MESSENGER, "provider": provider,
                               "name": name, "is_enabled": True, "settings": self._sealer.seal(settings)}
        if webhook_key is not None:
            row["webhook_key"] = webhook_key
        becomes_primary = not await self._has_primary(organization_id)
        try:
            saved = await first_row(self._db.table(TABLE).insert({**row, "is_primary": becomes_primary}),
                                    "saving the integration")
        except DatabaseError as exc:
            if not (becomes_primary and exc.pg_code == UNIQUE_VIOLATION):
                raise
            # A concurrent save became primary first: this one is a secondary integration.
            saved = await first_row(self._db.table(TABLE).insert({**row, "is_primary": False}),
                                    "saving the integration")
        if saved is None:
            raise DatabaseError("The database did not return the saved integration")
        return self._opened(saved)

    async def update(self, organization_id: str, integration_id: str, *, settings: Mapping[str, Any] | None,
                     name: str | None = None, webhook_key: str | None = None,
                     is_enabled: bool | None = None) -> IntegrationRow:
        """The organization's integration with `settings` (sealed) replaced; None leaves a field as it is."""
        changes: dict[str, Any] = {} if settings is None else {"settings": self._sealer.seal(settings)}
        optional = {"name": name, "webhook_key": webhook_key, "is_enabled": is_enabled}
        changes.update({column: value for column, value in optional.items() if value is not None})
        saved = await first_row(
            self._db.table(TABLE).update(changes).eq("id", integration_id).eq("organization_id", organization_id),
            "saving the integration")
        self._by_webhook_key.forget_integration(integration_id)
        if saved is None:
            raise DatabaseError("The integration disappeared while it was being saved")
        return self._opened(saved)

    async def delete(self, organization_id: str, integration_id: str) -> None:
        """Remove the integration; its messages stay, as history (their integration_id becomes NULL)."""
        await rows(self._db.table(TABLE).delete().eq("id", integration_id).eq("organization_id", organization_id),
                   "removing the integration")
        self._by_webhook_key.forget_integration(integration_id)

    async def _has_primary(self, organization_id: str) -> bool:
        row = await first_row(
            self._db.table(TABLE).select("id").eq("organization_id", organization_id)
            .eq("messenger_type", MESSENGER).eq("is_primary", True).limit(1), "finding the primary integration")
        return row is not None

    def _opened(self, row: Mapping[str, Any]) -> IntegrationRow:
        settings = row.get("settings")
        if isinstance(settings, Mapping):
            row = {**row, "settings": self._sealer.open(settings)}
        return IntegrationRow.model_validate(row)
