"""telegram-crm-send against a real crm_server: sent once, stored once, refusals mapped to clear answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from tests.crm_server.server_process import CrmClient, CrmServerProcess, new_phone
from tests.functions.conftest import Connected, Organization, connect_account, count, create_client, sandbox_user

MakeOrganization = Callable[[], Awaitable[Organization]]


@dataclass(frozen=True)
class Account:
    organization: Organization
    connected: Connected

    @property
    def phone(self) -> str:
        return self.connected.phone


@pytest.fixture
async def account(http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient,
                  make_organization: MakeOrganization) -> Account:
    """An organization with one connected and logged-in sandbox account."""
    organization = await make_organization()
    return Account(organization, await connect_account(http, crm, crm_admin, organization))


async def send(http: httpx.AsyncClient, organization: Organization, key: str | None = None,
               **body: object) -> httpx.Response:
    headers = {**organization.auth, **({"Idempotency-Key": key} if key else {})}
    return await http.post("/telegram-crm-send", json=body, headers=headers)


async def test_a_message_is_sent_stored_and_the_client_touched(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    user_id, _, username = sandbox_user(crm_admin)
    client_id = await create_client(db, account.organization.id, username=username)
    response = await send(http, account.organization, clientId=client_id, text="Hello from the CRM",
                          senderName="Anna")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and isinstance(body["messageId"], int)
    assert (body["integrationId"], body["provider"], body["failedOver"]) == \
        (account.connected.integration_id, "telegram_crm", False)

    assert [(m["to_user_id"], m["text"], m["message_id"]) for m in crm_admin.sent(account.phone)] == \
        [(user_id, "Hello from the CRM", body["messageId"])]
    row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", body["savedMessageId"])
    assert (row["client_id"], row["integration_id"], row["message_type"], row["message_status"], row["is_outgoing"],
            row["external_message_id"], row["sender_name"], row["message_text"]) == \
        (client_id, account.connected.integration_id, "manager", "sent", True, str(body["messageId"]), "Anna",
         "Hello from the CRM")
    assert uuid.UUID(row["idempotency_key"])
    client = await db.fetchrow("SELECT * FROM public.clients WHERE id = $1", client_id)
    assert client["last_message_at"] is not None
    assert client["telegram_user_id"] == str(user_id)  # the resolved id links the client's replies


async def test_the_same_idempotency_key_sends_and_stores_once(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    _, _, username = sandbox_user(crm_admin)
    client_id = await create_client(db, account.organization.id, username=username)
    key = f"retry-{uuid.uuid4()}"
    first = await send(http, account.organization, key, clientId=client_id, text="only once")
    again = await send(http, account.organization, key, clientId=client_id, text="only once")
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert len(crm_admin.sent(account.phone)) == 1
    assert await count(db, "chat_messages", account.organization.id) == 1


async def test_concurrent_requests_with_one_key_send_and_store_once(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    _, _, username = sandbox_user(crm_admin)
    client_id = await create_client(db, account.organization.id, username=username)
    key = f"burst-{uuid.uuid4()}"
    responses = await asyncio.gather(*(send(http, account.organization, key, clientId=client_id, text="burst")
                                       for _ in range(5)))
    assert [response.status_code for response in responses] == [200] * 5, [r.text for r in responses]
    assert len({response.json()["savedMessageId"] for response in responses}) == 1
    assert len(crm_admin.sent(account.phone)) == 1
    assert await count(db, "chat_messages", account.organization.id) == 1


async def test_a_key_reused_for_another_client_is_refused(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    first_client = await create_client(db, account.organization.id, username=sandbox_user(crm_admin)[2])
    second_client = await create_client(db, account.organization.id, username=sandbox_user(crm_admin)[2])
    key = f"reuse-{uuid.uuid4()}"
    assert (await send(http, account.organization, key, clientId=first_client, text="one")).status_code == 200
    response = await send(http, account.organization, key, clientId=second_client, text="two")
    assert response.status_code == 422
    assert response.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert len(crm_admin.sent(account.phone)) == 1


async def test_a_failed_store_is_retried(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    client_id = await create_client(db, account.organization.id, username=sandbox_user(crm_admin)[2])
    name = f"test_store_once_{account.organization.id.replace('-', '')[:12]}"
    await db.execute(f"""
        CREATE SEQUENCE public.{name};
        CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.organization_id = '{account.organization.id}' AND nextval('public.{name}') = 1 THEN
                RAISE EXCEPTION 'transient failure';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE INSERT ON public.chat_messages FOR EACH ROW EXECUTE FUNCTION public.{name}();""")
    try:
        response = await send(http, account.organization, clientId=client_id, text="stored on the second try")
    finally:
        await db.execute(f"DROP TRIGGER {name} ON public.chat_messages; DROP FUNCTION public.{name}(); "
                         f"DROP SEQUENCE public.{name};")
    assert response.status_code == 200, response.text
    assert len(crm_admin.sent(account.phone)) == 1
    assert await count(db, "chat_messages", account.organization.id) == 1


async def test_success_is_never_answered_without_the_row_and_a_retry_stores_without_resending(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    client_id = await create_client(db, account.organization.id, username=sandbox_user(crm_admin)[2])
    name = f"test_store_never_{account.organization.id.replace('-', '')[:12]}"
    await db.execute(f"""
        CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.organization_id = '{account.organization.id}' THEN RAISE EXCEPTION 'database down'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE INSERT ON public.chat_messages FOR EACH ROW EXECUTE FUNCTION public.{name}();""")
    key = f"unsaved-{uuid.uuid4()}"
    try:
        failed = await send(http, account.organization, key, clientId=client_id, text="sent but not saved")
    finally:
        await db.execute(f"DROP TRIGGER {name} ON public.chat_messages; DROP FUNCTION public.{name}();")
    assert failed.status_code == 500, failed.text
    assert failed.json()["code"] == "MESSAGE_NOT_STORED"
    assert await count(db, "chat_messages", account.organization.id) == 0

    retried = await send(http, account.organization, key, clientId=client_id, text="sent but not saved")
    assert retried.status_code == 200, retried.text
    assert len(crm_admin.sent(account.phone)) == 1  # crm_server answered the key's first result
    assert await count(db, "chat_messages", account.organization.id) == 1


async def test_an_unknown_numeric_id_falls_back_to_the_username(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    user_id, _, username = sandbox_user(crm_admin)
    # An id this account has never met cannot be resolved by Telegram; the username can.
    client_id = await create_client(db, account.organization.id, username=username, telegram_user_id="999000111")
    response = await send(http, account.organization, clientId=client_id, text="found by username")
    assert response.status_code == 200, response.text
    assert [m["to_user_id"] for m in crm_admin.sent(account.phone)] == [user_id]


async def test_a_client_nobody_can_find_is_422(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    client_id = await create_client(db, account.organization.id, username="nobody_has_this_name_42")
    response = await send(http, account.organization, clientId=client_id, text="lost")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "RECIPIENT_NOT_FOUND"
    assert await count(db, "chat_messages", account.organization.id) == 0


async def test_a_client_without_any_telegram_address_is_422(
        http: httpx.AsyncClient, db: asyncpg.Pool, account: Account) -> None:
    client_id = await create_client(db, account.organization.id)
    response = await send(http, account.organization, clientId=client_id, text="no address")
    assert response.status_code == 422
    assert (response.json()["code"], response.json()["field"]) == ("CLIENT_HAS_NO_TELEGRAM", "clientId")


async def test_privacy_restrictions_are_403(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    _, _, username = sandbox_user(crm_admin, privacy_restricted=True)
    client_id = await create_client(db, account.organization.id, username=username)
    response = await send(http, account.organization, clientId=client_id, text="private")
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "RECIPIENT_PRIVACY"


async def test_flood_wait_is_429_with_retry_after_and_nothing_stored(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    client_id = await create_client(db, account.organization.id, username=sandbox_user(crm_admin)[2])
    crm_admin.ok(crm_admin.post("/sandbox/flood", json={"account_phone": account.phone, "seconds": 42}))
    response = await send(http, account.organization, clientId=client_id, text="too fast")
    assert response.status_code == 429, response.text
    assert response.json()["code"] == "FLOOD_WAIT"
    assert response.headers["retry-after"] == "42"
    assert await count(db, "chat_messages", account.organization.id) == 0


async def test_an_account_that_is_not_logged_in_is_409(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    await connect_account(http, crm, crm_admin, organization, login=False)
    client_id = await create_client(db, organization.id, username=sandbox_user(crm_admin)[2])
    response = await send(http, organization, clientId=client_id, text="not yet")
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "ACCOUNT_NOT_AUTHORIZED"
    assert await count(db, "chat_messages", organization.id) == 0


async def test_without_an_integration_it_is_404(
        http: httpx.AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    client_id = await create_client(db, organization.id, username="someone")
    response = await send(http, organization, clientId=client_id, text="nowhere to send")
    assert response.status_code == 404
    assert response.json()["code"] == "INTEGRATION_NOT_FOUND"


async def test_an_explicitly_chosen_disabled_integration_is_409(
        http: httpx.AsyncClient, crm_admin: CrmClient, db: asyncpg.Pool, account: Account) -> None:
    client_id = await create_client(db, account.organization.id, username=sandbox_user(crm_admin)[2])
    await db.execute("UPDATE public.messenger_integrations SET is_enabled = false WHERE id = $1",
                     account.connected.integration_id)
    response = await send(http, account.organization, clientId=client_id, text="x",
                          integrationId=account.connected.integration_id)
    assert response.status_code == 409
    assert response.json()["code"] == "INTEGRATION_DISABLED"


@pytest.mark.parametrize("function", ["telegram-crm-send", "telegram-send"])
async def test_one_organization_cannot_send_to_anothers_client_or_through_anothers_integration(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization, function: str) -> None:
    organization_a, organization_b = await make_organization(), await make_organization()
    account_a = await connect_account(http, crm, crm_admin, organization_a)
    account_b = await connect_account(http, crm, crm_admin, organization_b)
    username = sandbox_user(crm_admin)[2]
    client_a = await create_client(db, organization_a.id, username=username)
    client_b = await create_client(db, organization_b.id, username=username)

    to_b_client = await http.post(f"/{function}", headers=organization_a.auth,
                                  json={"clientId": client_b, "text": "intrusion"})
    through_b_integration = await http.post(f"/{function}", headers=organization_a.auth, json={
        "clientId": client_a, "text": "intrusion", "integrationId": account_b.integration_id})
    assert (to_b_client.status_code, to_b_client.json()["code"]) == (404, "CLIENT_NOT_FOUND")
    assert (through_b_integration.status_code, through_b_integration.json()["code"]) == \
        (404, "INTEGRATION_NOT_FOUND")
    assert crm_admin.sent(account_a.phone) == [] and crm_admin.sent(account_b.phone) == []
    assert await count(db, "chat_messages", organization_a.id) == 0
    assert await count(db, "chat_messages", organization_b.id) == 0


async def test_bad_send_requests_name_the_field(http: httpx.AsyncClient, account: Account) -> None:
    for body, field in (({"text": "x"}, "clientId"), ({"clientId": "nope", "text": "x"}, "clientId"),
                        ({"clientId": str(uuid.uuid4())}, "text"),
                        ({"clientId": str(uuid.uuid4()), "fileUrl": "file:///etc/passwd"}, "fileUrl")):
        response = await http.post("/telegram-crm-send", json=body, headers=account.organization.auth)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == field
    _ = new_phone  # phones come from the shared sandbox sequence
