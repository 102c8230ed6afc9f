"""Integration secrets sealed at rest: the sealer on its own, then through the running stack (connect, send, webhook)
with the rows read straight from PostgreSQL, the way a leaked dump would be read."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from functions._shared.errors import SettingsKeyError, error_body
from functions._shared.providers import PROVIDERS
from functions._shared.sealed_settings import SEALED_PREFIX, SECRET_KEYS, SettingsSealer, is_sealed
from functions._shared.settings import FunctionsSettings
from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.functions.conftest import (
    Organization,
    connect_account,
    create_client,
    full_payload,
    integration_secret,
    sandbox_user,
    stored_settings,
    webhook_request,
)

MakeOrganization = Callable[[], Awaitable[Organization]]

CRM_SETTINGS = {"crmApiUrl": "https://crm.example", "crmApiKey": "crm-key-0123456789",
                "crmPhoneNumber": "+79990001122", "secret": "webhook-secret-0123456789"}
WAPPI_SETTINGS = {"profileId": "profile-1", "apiToken": "wappi-token-0123456789"}


@pytest.fixture
def sealer_under_test() -> SettingsSealer:
    return SettingsSealer(Fernet.generate_key())


# --- the sealer -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings", [CRM_SETTINGS, WAPPI_SETTINGS], ids=["telegram_crm", "wappi"])
def test_sealed_settings_open_to_the_original(sealer_under_test: SettingsSealer, settings: dict[str, str]) -> None:
    assert sealer_under_test.open(sealer_under_test.seal(settings)) == settings


def test_only_the_secret_values_are_sealed(sealer_under_test: SettingsSealer) -> None:
    sealed = sealer_under_test.seal(CRM_SETTINGS)
    assert {name for name, value in sealed.items() if is_sealed(value)} == {"crmApiKey", "secret"}
    assert (sealed["crmApiUrl"], sealed["crmPhoneNumber"]) == (CRM_SETTINGS["crmApiUrl"],
                                                               CRM_SETTINGS["crmPhoneNumber"])
    assert sealed["crmApiKey"].startswith(SEALED_PREFIX)
    assert CRM_SETTINGS["crmApiKey"] not in json.dumps(sealed) and CRM_SETTINGS["secret"] not in json.dumps(sealed)
    assert sealer_under_test.seal(WAPPI_SETTINGS)["profileId"] == "profile-1"


def test_sealing_leaves_its_argument_untouched(sealer_under_test: SettingsSealer) -> None:
    settings = dict(CRM_SETTINGS)
    sealer_under_test.open(sealer_under_test.seal(settings))
    assert settings == CRM_SETTINGS


def test_sealing_twice_seals_once(sealer_under_test: SettingsSealer) -> None:
    once = sealer_under_test.seal(CRM_SETTINGS)
    assert sealer_under_test.seal(once) == once
    assert sealer_under_test.open(sealer_under_test.seal(once)) == CRM_SETTINGS


def test_plain_values_written_before_sealing_pass_through(sealer_under_test: SettingsSealer) -> None:
    # Rows of the original TypeScript functions, or of a host without FUNCTIONS_SETTINGS_KEY.
    assert sealer_under_test.open(CRM_SETTINGS) == CRM_SETTINGS
    half = {**sealer_under_test.seal(CRM_SETTINGS), "secret": CRM_SETTINGS["secret"]}
    assert sealer_under_test.open(half) == CRM_SETTINGS


def test_empty_and_non_text_values_are_left_as_they_are(sealer_under_test: SettingsSealer) -> None:
    settings: dict[str, Any] = {"crmApiKey": "", "secret": None, "apiToken": 42, "extra": {"nested": "kept"}}
    assert sealer_under_test.seal(settings) == settings
    assert sealer_under_test.open(settings) == settings


def test_a_value_sealed_under_another_key_is_a_settings_key_error(sealer_under_test: SettingsSealer) -> None:
    sealed = SettingsSealer(Fernet.generate_key()).seal(CRM_SETTINGS)
    with pytest.raises(SettingsKeyError) as raised:
        sealer_under_test.open(sealed)
    error = raised.value
    assert (error.status_code, error.code) == (500, "SETTINGS_KEY_MISMATCH")
    assert "FUNCTIONS_SETTINGS_KEY" in error.message
    shown = json.dumps(error_body(error))
    for value in (CRM_SETTINGS["crmApiKey"], CRM_SETTINGS["secret"], sealed["crmApiKey"], sealed["secret"]):
        assert value not in shown
    assert error.__cause__ is None and error.__suppress_context__


def test_sealing_a_value_this_key_cannot_open_is_refused(sealer_under_test: SettingsSealer) -> None:
    foreign = SettingsSealer(Fernet.generate_key()).seal(WAPPI_SETTINGS)
    with pytest.raises(SettingsKeyError):
        sealer_under_test.seal(foreign)


def test_without_a_key_values_are_stored_as_given_and_sealed_ones_cannot_be_opened(
        sealer_under_test: SettingsSealer) -> None:
    unkeyed = SettingsSealer(None)
    assert not unkeyed.seals and sealer_under_test.seals
    assert unkeyed.seal(CRM_SETTINGS) == CRM_SETTINGS
    assert unkeyed.open(CRM_SETTINGS) == CRM_SETTINGS
    with pytest.raises(SettingsKeyError, match="FUNCTIONS_SETTINGS_KEY is not set"):
        unkeyed.open(sealer_under_test.seal(CRM_SETTINGS))


def test_every_secret_field_of_the_admin_forms_is_sealed() -> None:
    form_secrets = {field.key for provider in PROVIDERS.values() for field in provider.fields if field.secret}
    assert form_secrets <= SECRET_KEYS


def test_the_settings_key_must_be_a_fernet_key_and_is_never_echoed() -> None:
    key = Fernet.generate_key().decode()
    settings = FunctionsSettings(supabase_url="http://x", supabase_service_role_key="k", settings_key=f" {key}\n")
    assert settings.settings_key is not None and settings.settings_key.get_secret_value() == key
    assert key not in repr(settings)
    assert FunctionsSettings(supabase_url="http://x", supabase_service_role_key="k", settings_key=" ").settings_key \
        is None
    malformed = key[:-6] + "!!!!!="
    with pytest.raises(ValidationError, match="Fernet key") as raised:
        FunctionsSettings(supabase_url="http://x", supabase_service_role_key="k", settings_key=malformed)
    assert malformed not in str(raised.value)


# --- through the running stack --------------------------------------------------------------------------------------

async def row_text(db: asyncpg.Pool, integration_id: str) -> str:
    """The whole messenger_integrations row as PostgreSQL holds it, every column, as one text."""
    text = await db.fetchval("SELECT row_to_json(i)::text FROM public.messenger_integrations i WHERE i.id = $1",
                             integration_id)
    assert text is not None
    return str(text)


async def send(http: httpx.AsyncClient, organization: Organization, **body: object) -> httpx.Response:
    return await http.post("/telegram-crm-send", json=body, headers=organization.auth)


async def deliver(http: httpx.AsyncClient, organization: Organization, webhook_key: str, secret: str,
                  account_phone: str, from_id: int, text: str) -> httpx.Response:
    body, headers = webhook_request(secret, full_payload(organization.id, account_phone, from_id=from_id, text=text))
    return await http.post(f"/telegram-crm-webhook?key={webhook_key}", content=body, headers=headers)


async def test_a_connected_integration_keeps_no_secret_in_clear_yet_sends_and_receives(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        sealer: SettingsSealer, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    webhook_key, secret = await integration_secret(db, sealer, connected.integration_id)
    assert crm.admin_key and len(secret) >= 32

    stored = await row_text(db, connected.integration_id)
    assert crm.admin_key not in stored and secret not in stored
    raw = await db.fetchval("SELECT settings FROM public.messenger_integrations WHERE id = $1",
                            connected.integration_id)
    assert is_sealed(raw["crmApiKey"]) and is_sealed(raw["secret"])
    assert raw["crmPhoneNumber"] == connected.phone  # what is not secret stays readable

    # The send uses the opened API key against crm_server.
    user_id, _, username = sandbox_user(crm_admin)
    client_id = await create_client(db, organization.id, username=username)
    sent = await send(http, organization, clientId=client_id, text="sealed, still sent")
    assert sent.status_code == 200, sent.text
    assert [m["text"] for m in crm_admin.sent(connected.phone)] == ["sealed, still sent"]

    # The webhook checks the signature and X-Lovable-Secret against the opened secret.
    received = await deliver(http, organization, webhook_key, secret, connected.phone, user_id, "sealed, received")
    assert received.status_code == 200, received.text
    assert received.json()["clientId"] == client_id
    refused = await deliver(http, organization, webhook_key, raw["secret"], connected.phone, user_id, "forged")
    assert refused.status_code == 401


async def test_a_row_saved_in_clear_keeps_working_and_is_sealed_by_its_next_connect(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        sealer: SettingsSealer, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    # As the original TypeScript functions (or a host without FUNCTIONS_SETTINGS_KEY) left it: secrets in clear.
    plain = await stored_settings(db, sealer, connected.integration_id)
    await db.execute("UPDATE public.messenger_integrations SET settings = $2 WHERE id = $1",
                     connected.integration_id, plain)
    webhook_key = await db.fetchval("SELECT webhook_key FROM public.messenger_integrations WHERE id = $1",
                                    connected.integration_id)

    user_id, _, username = sandbox_user(crm_admin)
    client_id = await create_client(db, organization.id, username=username)
    assert (await send(http, organization, clientId=client_id, text="from a plain row")).status_code == 200
    received = await deliver(http, organization, webhook_key, plain["secret"], connected.phone, user_id, "to it")
    assert received.status_code == 200, received.text

    again = await http.post("/telegram-crm-connect", headers=organization.auth, json={
        "crmApiUrl": crm.url, "crmApiKey": crm.admin_key, "crmPhoneNumber": connected.phone})
    assert again.status_code == 200, again.text
    stored = await row_text(db, connected.integration_id)
    assert plain["crmApiKey"] not in stored and plain["secret"] not in stored
    assert await stored_settings(db, sealer, connected.integration_id) == plain


async def test_a_row_sealed_under_another_key_is_a_500_that_names_the_mismatch_not_the_secret(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        sealer: SettingsSealer, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    plain = await stored_settings(db, sealer, connected.integration_id)
    foreign = SettingsSealer(Fernet.generate_key()).seal(plain)
    await db.execute("UPDATE public.messenger_integrations SET settings = $2 WHERE id = $1",
                     connected.integration_id, foreign)

    _, _, username = sandbox_user(crm_admin)
    client_id = await create_client(db, organization.id, username=username)
    response = await send(http, organization, clientId=client_id, text="cannot be sent")
    assert response.status_code == 500
    assert response.json()["code"] == "SETTINGS_KEY_MISMATCH"
    for value in (plain["crmApiKey"], plain["secret"], foreign["crmApiKey"], foreign["secret"]):
        assert value not in response.text
    assert crm_admin.sent(connected.phone) == []
