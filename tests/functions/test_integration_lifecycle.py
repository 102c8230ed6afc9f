"""An integration's life: removed, re-pointed to another phone, disabled and enabled again, without losing or
mixing up messages, and with crm_server told each time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from tests.crm_server.server_process import CrmClient, CrmServerProcess, new_phone
from tests.functions.conftest import (
    FunctionsHost,
    Organization,
    connect_account,
    full_payload,
    integration_secret,
    sandbox_user,
    webhook_request,
)

MakeOrganization = Callable[[], Awaitable[Organization]]


async def deliver(http: httpx.AsyncClient, db: asyncpg.Pool, functions_host: FunctionsHost, integration_id: str,
                  payload: dict[str, object]) -> dict[str, object]:
    key, secret = await integration_secret(db, functions_host.sealer, integration_id)
    body, headers = webhook_request(secret, payload)
    response = await http.post(f"/telegram-crm-webhook?key={key}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def incoming_rows(db: asyncpg.Pool, organization_id: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT client_id, integration_id, message_text FROM public.chat_messages "
                          "WHERE organization_id = $1 AND NOT is_outgoing ORDER BY created_at", organization_id)


async def webhook_of(crm_admin: CrmClient, organization_id: str, phone: str) -> object:
    accounts = crm_admin.ok(crm_admin.get("/telegram/status", params={"project_id": organization_id}))["accounts"]
    return next((account["webhook"] for account in accounts if account["phone"] == phone), None)


async def test_removing_integrations_whose_telegram_ids_overlap_always_works_and_keeps_their_history(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        functions_host: FunctionsHost, make_organization: MakeOrganization) -> None:
    """Two organizations' accounts both received their message 5; removing both integrations leaves two orphaned
    history rows with the same Telegram id, which a key not scoped by organization and account refused."""
    organizations = []
    for _ in range(2):
        organization = await make_organization()
        connected = await connect_account(http, crm, crm_admin, organization, login=False)
        answer = await deliver(http, db, functions_host, connected.integration_id,
                               full_payload(organization.id, connected.phone, from_id=4242, message_id=5))
        assert answer["duplicate"] is False
        organizations.append((organization, connected))

    for organization, connected in organizations:
        await db.execute("DELETE FROM public.messenger_integrations WHERE id = $1", connected.integration_id)

    for organization, _ in organizations:
        rows = await incoming_rows(db, organization.id)
        assert [(row["integration_id"], row["message_text"]) for row in rows] == [(None, "hello")]


async def test_a_re_pointed_integration_stores_the_new_accounts_messages_and_unregisters_the_old_phone(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        functions_host: FunctionsHost, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    first = await connect_account(http, crm, crm_admin, organization, login=False)
    await deliver(http, db, functions_host, first.integration_id,
                  full_payload(organization.id, first.phone, from_id=1111, message_id=7, text="to the old phone"))

    second_phone = new_phone()
    response = await http.post("/telegram-crm-connect", headers=organization.auth, json={
        "crmApiUrl": crm.url, "crmApiKey": crm.admin_key, "crmPhoneNumber": second_phone,
        "integrationId": first.integration_id})
    assert response.status_code == 200, response.text

    # The new account's message 7 is another message (another account, another chat), not a redelivery.
    answer = await deliver(http, db, functions_host, first.integration_id,
                           full_payload(organization.id, second_phone, from_id=2222, message_id=7,
                                        text="to the new phone"))
    assert answer["duplicate"] is False
    rows = await incoming_rows(db, organization.id)
    assert sorted(row["message_text"] for row in rows) == ["to the new phone", "to the old phone"]
    assert rows[0]["client_id"] != rows[1]["client_id"]
    # The old phone no longer posts to this integration; the new one does.
    assert await webhook_of(crm_admin, organization.id, first.phone) is None
    assert await webhook_of(crm_admin, organization.id, second_phone) is not None


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_disabled_integrations_keep_their_messages_waiting_and_enabling_delivers_them_in_order(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    _, client_phone, _ = sandbox_user(crm_admin, first_name="Waiting")

    async def nothing_pending() -> bool:
        return bool(crm_admin.account(organization.id, connected.phone)["webhook"]["pending"] == 0)

    # The login's account.status event first: it is not one of the messages counted below (it raced the disable).
    await wait_until(nothing_pending)
    disable = await http.post("/telegram-integration-save", headers=organization.auth, json={
        "provider": "telegram_crm", "integrationId": connected.integration_id, "isEnabled": False})
    assert disable.status_code == 200, disable.text
    assert disable.json()["isEnabled"] is False
    texts = [f"while disabled {number}" for number in range(20)]
    for text in texts:
        crm_admin.ok(crm_admin.post("/sandbox/incoming",
                                    json={"account_phone": connected.phone, "from": client_phone, "text": text}))

    async def all_waiting() -> bool:
        webhook = crm_admin.account(organization.id, connected.phone)["webhook"]
        return bool(webhook["pending"] == 20)

    await wait_until(all_waiting)
    await asyncio.sleep(0.5)
    webhook = crm_admin.account(organization.id, connected.phone)["webhook"]
    assert (webhook["pending"], webhook["failed"], webhook["paused"]) == (20, 0, True)  # none dead
    assert await incoming_rows(db, organization.id) == []

    enable = await http.post("/telegram-integration-save", headers=organization.auth, json={
        "provider": "telegram_crm", "integrationId": connected.integration_id, "isEnabled": True})
    assert enable.status_code == 200, enable.text

    async def all_stored() -> bool:
        return len(await incoming_rows(db, organization.id)) == 20

    await wait_until(all_stored)
    stored = await db.fetch("SELECT message_text FROM public.chat_messages WHERE organization_id = $1 "
                            "AND NOT is_outgoing ORDER BY external_message_id::bigint", organization.id)
    assert [row["message_text"] for row in stored] == texts
    assert crm_admin.account(organization.id, connected.phone)["webhook"]["failed"] == 0


async def test_removing_an_integration_tells_crm_server_first_and_keeps_the_history(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    _, client_phone, _ = sandbox_user(crm_admin, first_name="History")
    crm_admin.ok(crm_admin.post("/sandbox/incoming",
                                json={"account_phone": connected.phone, "from": client_phone, "text": "kept"}))

    async def stored() -> bool:
        return len(await incoming_rows(db, organization.id)) == 1

    await wait_until(stored)
    other = await make_organization()
    refused = await http.post("/telegram-integration-remove", headers=other.auth,
                              json={"integrationId": connected.integration_id, "logout": True})
    assert refused.status_code == 404  # another organization's integration is not theirs to remove

    removed = await http.post("/telegram-integration-remove", headers=organization.auth,
                              json={"integrationId": connected.integration_id, "logout": True})
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"success": True, "integrationId": connected.integration_id,
                              "crmServer": "logged_out", "dropped": 0}
    accounts = crm_admin.ok(crm_admin.get("/telegram/status", params={"project_id": organization.id}))["accounts"]
    assert connected.phone not in {account["phone"] for account in accounts}
    assert await db.fetchval("SELECT count(*) FROM public.messenger_integrations WHERE id = $1",
                             connected.integration_id) == 0
    rows = await incoming_rows(db, organization.id)
    assert [(row["integration_id"], row["message_text"]) for row in rows] == [(None, "kept")]
