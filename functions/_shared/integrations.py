"""Loading messenger integrations and clients for one organization, and choosing which integration sends.

The choice: the caller's explicit integration; else the one that received the client's last incoming message, if
enabled; else the organization's primary; else its oldest enabled one. All queries filter by organization, because
the service role sees every organization.
"""

from __future__ import annotations

from collections.abc import Collection

from supabase import AsyncClient

from functions._shared.database import first_row, rows
from functions._shared.errors import ClientNotFoundError, IntegrationDisabledError, IntegrationNotFoundError
from functions._shared.types import ClientRow, IntegrationRow, Provider

MESSENGER = "telegram"
INTEGRATION_COLUMNS = ("id, organization_id, messenger_type, provider, name, is_primary, is_enabled, webhook_key, "
                       "settings, created_at")
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


async def load_integration(db: AsyncClient, organization_id: str, integration_id: str) -> IntegrationRow:
    """The organization's Telegram integration; another organization's is 404, exactly like a missing one."""
    row = await first_row(
        db.table("messenger_integrations").select(INTEGRATION_COLUMNS).eq("id", integration_id)
        .eq("organization_id", organization_id).eq("messenger_type", MESSENGER).limit(1), "loading the integration")
    if row is None:
        raise IntegrationNotFoundError(field="integrationId")
    return IntegrationRow.model_validate(row)


async def find_integration_by_webhook_key(db: AsyncClient, webhook_key: str) -> IntegrationRow | None:
    row = await first_row(
        db.table("messenger_integrations").select(INTEGRATION_COLUMNS).eq("webhook_key", webhook_key).limit(1),
        "finding the integration by webhook key")
    return IntegrationRow.model_validate(row) if row else None


async def telegram_integrations(db: AsyncClient, organization_id: str) -> list[IntegrationRow]:
    """The organization's Telegram integrations, primary first, then oldest first."""
    found = await rows(
        db.table("messenger_integrations").select(INTEGRATION_COLUMNS).eq("organization_id", organization_id)
        .eq("messenger_type", MESSENGER).order("is_primary", desc=True).order("created_at").order("id"),
        "listing the organization's integrations")
    return [IntegrationRow.model_validate(row) for row in found]


async def last_incoming_integration_id(db: AsyncClient, organization_id: str, client_id: str) -> str | None:
    # The very last incoming message decides; if its integration was deleted since, the primary takes over.
    row = await first_row(
        db.table("chat_messages").select("integration_id").eq("organization_id", organization_id)
        .eq("client_id", client_id).eq("is_outgoing", False)
        .order("created_at", desc=True).limit(1), "finding the client's last incoming message")
    return str(row["integration_id"]) if row and row.get("integration_id") else None


async def choose_integration(db: AsyncClient, organization_id: str, client: ClientRow, explicit_id: str | None,
                             providers: Collection[Provider] = ALL_PROVIDERS) -> IntegrationRow:
    """The integration that sends to `client` (see the module docstring)."""
    if explicit_id is not None:
        integration = await load_integration(db, organization_id, explicit_id)
        if integration.provider not in providers:
            raise IntegrationNotFoundError(f"Integration {explicit_id} is not a {' or '.join(providers)} "
                                           f"integration", field="integrationId")
        if not integration.is_enabled:
            raise IntegrationDisabledError(field="integrationId")
        return integration
    candidates = [integration for integration in await telegram_integrations(db, organization_id)
                  if integration.is_enabled and integration.provider in providers]
    last_incoming = await last_incoming_integration_id(db, organization_id, client.id)
    for integration in candidates:
        if integration.id == last_incoming:
            return integration
    if candidates:
        # Ordered primary first, then oldest.
        return candidates[0]
    raise IntegrationNotFoundError("The organization has no enabled Telegram integration; connect one first")


async def failover_integration(db: AsyncClient, organization_id: str, failed: IntegrationRow,
                               providers: Collection[Provider] = ALL_PROVIDERS) -> IntegrationRow | None:
    """Another enabled Telegram integration of the organization to try once after `failed`, primary first."""
    for integration in await telegram_integrations(db, organization_id):
        if integration.id != failed.id and integration.is_enabled and integration.provider in providers:
            return integration
    return None
