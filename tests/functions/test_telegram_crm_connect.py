"""telegram-crm-connect against a real crm_server: the integration is saved only when the server accepted it."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from functions._shared.errors import ValidationFailedError
from functions._shared.parsing import validate_model
from functions._shared.sealed_settings import SettingsSealer
from functions.telegram_crm_connect import ConnectRequest
from tests.crm_server.server_process import CrmClient, CrmServerProcess, new_phone, run_cli
from tests.functions.conftest import Organization, connect_account, count, create_wappi_integration, stored_settings
from tests.helpers.net import free_port

MakeOrganization = Callable[[], Awaitable[Organization]]


def connect_body(crm: CrmServerProcess, **fields: object) -> dict[str, object]:
    return {"crmApiUrl": crm.url, "crmApiKey": crm.admin_key, "crmPhoneNumber": new_phone(), **fields}


def connect(**fields: object) -> dict[str, object]:
    return {"crmApiUrl": "https://crm.example.com", "crmApiKey": "key", "crmPhoneNumber": "+79990000001", **fields}


async def test_connect_registers_the_webhook_and_saves_a_primary_integration(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        sealer: SettingsSealer, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    phone = new_phone()
    response = await http.post("/telegram-crm-connect", headers=organization.auth, json={
        "crmApiUrl": crm.url + "/", "crmApiKey": crm.admin_key, "crmPhoneNumber": phone, "name": "Sales"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["isPrimary"] is True
    assert body["status"] == "auth_required"  # not logged in yet: the UI starts the login
    assert "/functions/v1/telegram-crm-webhook?key=" in body["webhookUrl"]
    assert crm.admin_key not in response.text and "secret" not in body

    row = await db.fetchrow("SELECT * FROM public.messenger_integrations WHERE id = $1", body["integrationId"])
    settings = sealer.open(row["settings"])
    assert (row["organization_id"], row["provider"], row["name"], row["is_primary"], row["is_enabled"]) == \
        (organization.id, "telegram_crm", "Sales", True, True)
    assert settings["crmApiUrl"] == crm.url and settings["crmApiKey"] == crm.admin_key
    assert settings["crmPhoneNumber"] == phone and len(settings["secret"]) >= 32
    assert body["webhookUrl"].endswith("key=" + row["webhook_key"])
    # crm_server now delivers this account's messages to that URL.
    assert crm_admin.account(organization.id, phone)["webhook"]["url"] == body["webhookUrl"]


async def test_after_login_connect_reports_connected(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, make_organization: MakeOrganization
) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    again = await http.post("/telegram-crm-connect", headers=organization.auth,
                            json=connect_body(crm, crmPhoneNumber=connected.phone))
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "connected"


async def test_only_the_first_telegram_integration_becomes_primary(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    first = await connect_account(http, crm, crm_admin, organization, login=False)
    second = await connect_account(http, crm, crm_admin, organization, login=False)
    assert (first.body["isPrimary"], second.body["isPrimary"]) == (True, False)
    primaries = await db.fetch("SELECT id FROM public.messenger_integrations WHERE organization_id = $1 "
                               "AND is_primary", organization.id)
    assert [row["id"] for row in primaries] == [first.integration_id]


async def test_an_existing_wappi_primary_stays_primary(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    await create_wappi_integration(db, organization.id, "p-1", "t-1", primary=True)
    connected = await connect_account(http, crm, crm_admin, organization, login=False)
    assert connected.body["isPrimary"] is False


async def test_reconnecting_the_same_phone_updates_the_integration_and_keeps_its_webhook(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        sealer: SettingsSealer, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    first = await connect_account(http, crm, crm_admin, organization, login=False)
    secret_before = (await stored_settings(db, sealer, first.integration_id))["secret"]
    again = await http.post("/telegram-crm-connect", headers=organization.auth,
                            json=connect_body(crm, crmPhoneNumber=first.phone, name="Renamed"))
    assert again.status_code == 200, again.text
    assert again.json()["integrationId"] == first.integration_id
    assert again.json()["webhookUrl"] == first.webhook_url
    assert await count(db, "messenger_integrations", organization.id) == 1
    name = await db.fetchval("SELECT name FROM public.messenger_integrations WHERE id = $1", first.integration_id)
    secret_after = (await stored_settings(db, sealer, first.integration_id))["secret"]
    assert (name, secret_after) == ("Renamed", secret_before)


async def test_reconnecting_to_another_server_url_rotates_the_secret_and_marks_deliveries_signed(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        sealer: SettingsSealer, make_organization: MakeOrganization) -> None:
    """The old secret is never posted to a server that did not have it (here the same server under another name:
    the functions cannot tell, and need not)."""
    organization = await make_organization()
    first = await connect_account(http, crm, crm_admin, organization, login=False)
    before = await stored_settings(db, sealer, first.integration_id)
    assert before["signatureRequired"] is True  # our crm_server said at connect that it signs every delivery
    other_url = crm.url.replace("127.0.0.1", "localhost")
    moved = await http.post("/telegram-crm-connect", headers=organization.auth, json={
        **connect_body(crm, crmPhoneNumber=first.phone), "crmApiUrl": other_url,
        "integrationId": first.integration_id})
    assert moved.status_code == 200, moved.text
    after = await stored_settings(db, sealer, first.integration_id)
    assert after["crmApiUrl"] == other_url and after["secret"] != before["secret"]


async def test_connect_with_integration_id_updates_that_integration(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    first = await connect_account(http, crm, crm_admin, organization, login=False)
    new_phone_number = new_phone()
    response = await http.post("/telegram-crm-connect", headers=organization.auth, json=connect_body(
        crm, crmPhoneNumber=new_phone_number, integrationId=first.integration_id))
    assert response.status_code == 200, response.text
    assert response.json()["integrationId"] == first.integration_id
    row = await db.fetchrow("SELECT settings FROM public.messenger_integrations WHERE id = $1", first.integration_id)
    assert row["settings"]["crmPhoneNumber"] == new_phone_number
    assert await count(db, "messenger_integrations", organization.id) == 1


@pytest.mark.parametrize(("fields", "field"), [
    ({"crmApiUrl": "http://crm.example.com"}, "crmApiUrl"),
    ({"crmApiUrl": "not a url"}, "crmApiUrl"),
    ({"crmApiKey": ""}, "crmApiKey"),
    ({"crmPhoneNumber": "12-34"}, "crmPhoneNumber"),
    ({"crmPhoneNumber": None}, "crmPhoneNumber"),
    ({"integrationId": "123"}, "integrationId"),
])
async def test_bad_fields_are_refused_naming_the_field_and_nothing_is_saved(
        http: httpx.AsyncClient, crm: CrmServerProcess, db: asyncpg.Pool, make_organization: MakeOrganization,
        fields: dict[str, object], field: str) -> None:
    organization = await make_organization()
    response = await http.post("/telegram-crm-connect", headers=organization.auth, json=connect_body(crm, **fields))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and response.json()["success"] is False
    assert await count(db, "messenger_integrations", organization.id) == 0


async def test_a_body_that_is_not_json_is_400(http: httpx.AsyncClient, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    response = await http.post("/telegram-crm-connect", headers=organization.auth, content=b"{nope")
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_JSON"


async def test_an_unreachable_server_is_502_and_nothing_is_saved(
        http: httpx.AsyncClient, crm: CrmServerProcess, db: asyncpg.Pool, make_organization: MakeOrganization
) -> None:
    organization = await make_organization()
    dead = f"http://127.0.0.1:{free_port()}"
    response = await http.post("/telegram-crm-connect", headers=organization.auth,
                               json=connect_body(crm, crmApiUrl=dead))
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "CRM_SERVER_UNREACHABLE"
    assert dead not in response.json()["error"]  # one fixed message: see test_crm_client.py
    assert await count(db, "messenger_integrations", organization.id) == 0


async def test_a_wrong_api_key_is_502_with_the_servers_code_and_nothing_is_saved(
        http: httpx.AsyncClient, crm: CrmServerProcess, db: asyncpg.Pool, make_organization: MakeOrganization
) -> None:
    organization = await make_organization()
    response = await http.post("/telegram-crm-connect", headers=organization.auth,
                               json=connect_body(crm, crmApiKey="wrong-key"))
    assert response.status_code == 502, response.text
    body = response.json()
    assert (body["code"], body["upstreamCode"]) == ("CRM_SERVER_AUTH_FAILED", "UNAUTHORIZED")
    assert "API key" in body["error"]
    assert await count(db, "messenger_integrations", organization.id) == 0


async def test_a_key_of_another_project_is_502_and_nothing_is_saved(
        http: httpx.AsyncClient, crm: CrmServerProcess, db: asyncpg.Pool, make_organization: MakeOrganization
) -> None:
    organization = await make_organization()
    other_key = run_cli("keys", "create", "--project", str(uuid.uuid4()), state_dir=crm.state_dir).strip()
    response = await http.post("/telegram-crm-connect", headers=organization.auth,
                               json=connect_body(crm, crmApiKey=other_key))
    assert response.status_code == 502, response.text
    assert response.json()["upstreamCode"] == "PROJECT_FORBIDDEN"
    assert await count(db, "messenger_integrations", organization.id) == 0


async def test_a_server_4xx_is_502_with_its_code_and_nothing_is_saved(
        http: httpx.AsyncClient, crm: CrmServerProcess, db: asyncpg.Pool, make_organization: MakeOrganization
) -> None:
    organization = await make_organization()
    # A URL under which no crm_server route lives: the server answers 404 in its JSON error shape.
    response = await http.post("/telegram-crm-connect", headers=organization.auth,
                               json=connect_body(crm, crmApiUrl=crm.url + "/wrong-prefix"))
    assert response.status_code == 502, response.text
    body = response.json()
    assert (body["code"], body["upstreamCode"]) == ("CRM_SERVER_ERROR", "NOT_FOUND")
    assert "No such route" not in body["error"]  # crm_server's words stay in our log
    assert await count(db, "messenger_integrations", organization.id) == 0


async def test_without_a_token_it_is_401_and_without_an_organization_404(
        http: httpx.AsyncClient, crm: CrmServerProcess, db: asyncpg.Pool, local_keys: object) -> None:
    from supabase_local.keys import user_token

    assert (await http.post("/telegram-crm-connect", json=connect_body(crm))).status_code == 401
    lonely = await db.fetchval("INSERT INTO auth.users (email) VALUES (gen_random_uuid()::text || '@x') RETURNING id")
    await db.execute("INSERT INTO public.profiles (id) VALUES ($1)", lonely)
    token = user_token(str(lonely), local_keys.jwt_secret)  # type: ignore[attr-defined]
    response = await http.post("/telegram-crm-connect", json=connect_body(crm),
                               headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert response.json()["code"] == "ORGANIZATION_NOT_FOUND"


async def test_another_organizations_integration_cannot_be_updated(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    owner, intruder = await make_organization(), await make_organization()
    connected = await connect_account(http, crm, crm_admin, owner, login=False)
    response = await http.post("/telegram-crm-connect", headers=intruder.auth,
                               json=connect_body(crm, integrationId=connected.integration_id))
    assert response.status_code == 404
    assert response.json()["code"] == "INTEGRATION_NOT_FOUND"
    row = await db.fetchrow("SELECT organization_id, settings FROM public.messenger_integrations WHERE id = $1",
                            connected.integration_id)
    assert row["organization_id"] == owner.id
    assert row["settings"]["crmPhoneNumber"] == connected.phone


# --- the request, validated at the edge -------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "field"), [
    ({"crmApiUrl": "ftp://crm.example.com"}, "crmApiUrl"),
    ({"crmApiUrl": "https://user:pw@crm.example.com"}, "crmApiUrl"),
    ({"crmApiUrl": "https://crm.example.com/?x=1"}, "crmApiUrl"),
    ({"crmApiKey": ""}, "crmApiKey"),
    ({"crmApiKey": "   "}, "crmApiKey"),
    ({"crmPhoneNumber": "12"}, "crmPhoneNumber"),
    ({"crmPhoneNumber": 79990000001}, "crmPhoneNumber"),
    ({"integrationId": "not-a-uuid"}, "integrationId"),
])
def test_bad_connect_fields_are_422_naming_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(ConnectRequest, connect(**fields))
    assert (caught.value.status_code, caught.value.field) == (422, field)


def test_a_missing_connect_field_is_named() -> None:
    body = connect()
    del body["crmApiKey"]
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(ConnectRequest, body)
    assert caught.value.field == "crmApiKey"
    assert "required" in caught.value.message


def test_the_url_is_only_checked_for_its_form_here() -> None:
    # Which servers may be reached (https, public addresses; loopback on a local stack) is decided where they are
    # reached, after resolving (tests/functions/test_crm_addresses.py).
    assert validate_model(ConnectRequest, connect(crmApiUrl="http://127.0.0.1:8090/")).crmApiUrl == \
        "http://127.0.0.1:8090"


def test_connect_phone_is_normalised() -> None:
    assert validate_model(ConnectRequest, connect(crmPhoneNumber="7 999 000 00 01")).crmPhoneNumber == "+79990000001"
