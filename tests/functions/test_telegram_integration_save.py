"""telegram-integration-save: the admin page saves a Wappi.pro integration (settings only, no connect call)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from functions._shared.sealed_settings import SettingsSealer, is_sealed
from tests.functions.conftest import Organization, create_wappi_integration, stored_settings

MakeOrganization = Callable[[], Awaitable[Organization]]


async def test_saves_a_wappi_integration_without_echoing_its_token(
        http: httpx.AsyncClient, db: asyncpg.Pool, sealer: SettingsSealer, make_organization: MakeOrganization
) -> None:
    organization = await make_organization()
    response = await http.post("/telegram-integration-save", headers=organization.auth, json={
        "provider": "wappi", "profileId": " p-1 ", "apiToken": "token-123", "name": "Support"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["isPrimary"] is True
    assert "token-123" not in response.text
    row = await db.fetchrow("SELECT * FROM public.messenger_integrations WHERE id = $1", body["integrationId"])
    assert (row["organization_id"], row["provider"], row["name"]) == (organization.id, "wappi", "Support")
    assert sealer.open(row["settings"]) == {"profileId": "p-1", "apiToken": "token-123"}
    assert row["settings"]["profileId"] == "p-1" and is_sealed(row["settings"]["apiToken"])


async def test_a_missing_required_field_is_named(http: httpx.AsyncClient,
                                                 make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    response = await http.post("/telegram-integration-save", headers=organization.auth,
                               json={"provider": "wappi", "profileId": "p-1"})
    assert response.status_code == 422
    assert response.json()["field"] == "apiToken"


async def test_telegram_crm_is_connected_elsewhere(http: httpx.AsyncClient,
                                                   make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    response = await http.post("/telegram-integration-save", headers=organization.auth,
                               json={"provider": "telegram_crm", "crmPhoneNumber": "+79990000001"})
    assert response.status_code == 422
    assert response.json()["field"] == "provider" and "telegram-crm-connect" in response.json()["error"]


async def test_an_update_with_a_blank_token_keeps_the_saved_one(
        http: httpx.AsyncClient, db: asyncpg.Pool, sealer: SettingsSealer, make_organization: MakeOrganization
) -> None:
    organization = await make_organization()
    integration_id = await create_wappi_integration(db, organization.id, "p-old", "secret-token", primary=True)
    response = await http.post("/telegram-integration-save", headers=organization.auth, json={
        "provider": "wappi", "integrationId": integration_id, "profileId": "p-new", "apiToken": ""})
    assert response.status_code == 200, response.text
    assert await stored_settings(db, sealer, integration_id) == {"profileId": "p-new", "apiToken": "secret-token"}
    # Saved in clear before (as the original functions left it); sealed by this save.
    raw = await db.fetchval("SELECT settings FROM public.messenger_integrations WHERE id = $1", integration_id)
    assert is_sealed(raw["apiToken"])


async def test_another_organizations_integration_is_not_found(
        http: httpx.AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    owner, other = await make_organization(), await make_organization()
    integration_id = await create_wappi_integration(db, owner.id, "p-1", "owner-token")
    response = await http.post("/telegram-integration-save", headers=other.auth, json={
        "provider": "wappi", "integrationId": integration_id, "profileId": "stolen", "apiToken": "x"})
    assert response.status_code == 404
    settings = await db.fetchval("SELECT settings FROM public.messenger_integrations WHERE id = $1", integration_id)
    assert settings["profileId"] == "p-1"
