"""The whole loop over real sockets: connect → login → a Telegram user writes → the CRM stores it → the manager
replies through telegram-send → the user receives it (the sandbox shows the sent message).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from tests.crm_server.server_process import CrmClient, CrmServerProcess, new_phone, run_cli
from tests.functions.conftest import Organization, sandbox_user

MakeOrganization = Callable[[], Awaitable[Organization]]

async def test_a_client_writes_and_the_manager_replies(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    project_key = run_cli("keys", "create", "--project", organization.id, state_dir=crm.state_dir).strip()
    phone = new_phone()

    # The admin connects the account with the organization's own key...
    connected = await http.post("/telegram-crm-connect", headers=organization.auth, json={
        "crmApiUrl": crm.url, "crmApiKey": project_key, "crmPhoneNumber": phone, "name": "Support"})
    assert connected.status_code == 200, connected.text
    assert connected.json()["status"] == "auth_required"
    integration_id = connected.json()["integrationId"]

    # ...and logs it in through the server's auth routes (code, as the UI would).
    project_client = CrmClient(crm.url, project_key)
    try:
        project_client.login(organization.id, phone)
        assert project_client.account(organization.id, phone)["authorized"] is True
    finally:
        project_client.close()

    # A Telegram user writes to the account.
    user_id, user_phone, username = sandbox_user(crm_admin, first_name="Olga", last_name="Ivanova")
    incoming = crm_admin.ok(crm_admin.post("/sandbox/incoming", json={
        "account_phone": phone, "from": user_phone, "text": "Hi! Is the blue one in stock?"}))

    # crm_server's listener writes it to its outbox and delivers it, signed, to telegram-crm-webhook.
    row = await _wait_for_incoming(db, organization.id, str(incoming["message_id"]))

    # The message is the client's, in the CRM.
    assert (row["message_text"], row["integration_id"], row["is_outgoing"]) == \
        ("Hi! Is the blue one in stock?", integration_id, False)
    client = await db.fetchrow("SELECT * FROM public.clients WHERE id = $1", row["client_id"])
    assert (client["name"], client["telegram_user_id"], client["phone"]) == ("Olga Ivanova", str(user_id), user_phone)

    # The manager replies from the CRM's one entry point.
    reply = await http.post("/telegram-send", headers=organization.auth,
                            json={"clientId": row["client_id"], "text": "Yes, we have it!"})
    assert reply.status_code == 200, reply.text
    assert (reply.json()["integrationId"], reply.json()["provider"]) == (integration_id, "telegram_crm")

    # The user received it.
    assert [(m["to_user_id"], m["text"]) for m in crm_admin.sent(phone)] == [(user_id, "Yes, we have it!")]
    messages = await db.fetch("SELECT message_type, message_text FROM public.chat_messages WHERE client_id = $1 "
                              "ORDER BY created_at", row["client_id"])
    assert [(m["message_type"], m["message_text"]) for m in messages] == \
        [("client", "Hi! Is the blue one in stock?"), ("manager", "Yes, we have it!")]


async def _wait_for_incoming(db: asyncpg.Pool, organization_id: str, message_id: str,
                             timeout: float = 20.0) -> asyncpg.Record:
    deadline = time.monotonic() + timeout
    while True:
        row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE organization_id = $1 "
                                "AND external_message_id = $2 AND NOT is_outgoing", organization_id, message_id)
        if row is not None:
            return row
        assert time.monotonic() < deadline, "the incoming message never reached chat_messages"
        await asyncio.sleep(0.1)
