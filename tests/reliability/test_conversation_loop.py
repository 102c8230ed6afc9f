"""The whole conversation through the real stack: sandbox Telegram → crm_server (its real Telethon event code) →
signed webhooks → telegram-crm-webhook → PostgreSQL. A client's message, its edit, the manager's reply from the CRM
and from the phone, both read receipts, a deletion and a login code end as the rows the CRM shows."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.reliability.stack import ReliabilityStack

pytestmark = pytest.mark.slow

LOGIN_CODE_TEXT = "Login code: 52917. Do not give this code to anyone, even if they say they are from Telegram!"


async def _rows(stack: ReliabilityStack, organization_id: str) -> list[dict]:
    pool = await stack.db()
    rows = await pool.fetch(
        "SELECT external_message_id, message_text, is_outgoing, message_type, message_status, is_read, edited_at,"
        " deleted_at, metadata FROM chat_messages WHERE organization_id = $1 ORDER BY created_at, id",
        organization_id)
    return [dict(row) for row in rows]


async def _until(stack: ReliabilityStack, organization_id: str, check, timeout: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await _rows(stack, organization_id)
        if check(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


def _by_id(rows: list[dict], message_id: int) -> dict:
    found = [row for row in rows if row["external_message_id"] == str(message_id)]
    assert len(found) == 1, (message_id, rows)
    return found[0]


async def test_every_event_type_lands_in_the_crm_as_telegram_has_it(stack: ReliabilityStack) -> None:
    tenant = await stack.tenant("Events")
    account = await stack.connect_account(tenant)
    phone = account.phone
    _, user_phone, client_id = await stack.client_who_wrote(tenant, phone, "hello", timeout=30)
    rows = await _rows(stack, tenant.organization_id)
    first = int(rows[0]["external_message_id"])

    await stack.crm_ok("POST", "/sandbox/edit", json={"account_phone": phone, "from": user_phone,
                                                      "message_id": first, "text": "hello, edited"})
    reply = await stack.http.post(f"{stack.functions_url}/telegram-send", headers=tenant.auth,
                                  json={"clientId": client_id, "text": "reply from the CRM"})
    assert reply.status_code == 200, reply.text
    ours = int(reply.json()["messageId"])
    from_phone = await stack.crm_ok("POST", "/sandbox/outgoing", json={"account_phone": phone, "to": user_phone,
                                                                      "text": "reply from the phone"})
    phone_sent = from_phone["message_id"]
    await stack.crm_ok("POST", "/sandbox/read", json={"account_phone": phone, "from": user_phone, "max_id": ours})
    await stack.crm_ok("POST", "/sandbox/read", json={"account_phone": phone, "from": phone, "peer": user_phone,
                                                      "max_id": first})
    await stack.crm_ok("POST", "/sandbox/service-message", json={"account_phone": phone, "text": LOGIN_CODE_TEXT})
    second = (await stack.crm_ok("POST", "/sandbox/incoming", json={"account_phone": phone, "from": user_phone,
                                                                    "text": "to be deleted"}))["message_id"]
    await stack.crm_ok("POST", "/sandbox/delete", json={"account_phone": phone, "message_ids": [second]})

    def settled(rows: list[dict]) -> bool:
        ids = {row["external_message_id"]: row for row in rows}
        return (str(second) in ids and ids[str(second)]["deleted_at"] is not None
                and str(ours) in ids and ids[str(ours)]["message_status"] == "read"
                and str(phone_sent) in ids and ids[str(first)]["is_read"])

    rows = await _until(stack, tenant.organization_id, settled)
    hello, crm_reply, phone_reply, deleted = (_by_id(rows, i) for i in (first, ours, phone_sent, second))
    assert (hello["message_text"], hello["is_outgoing"], hello["is_read"]) == ("hello, edited", False, True)
    assert hello["edited_at"] is not None
    assert json.loads(hello["metadata"])["edits"][0]["text"] == "hello"
    assert (crm_reply["is_outgoing"], crm_reply["message_status"]) == (True, "read")
    assert json.loads(crm_reply["metadata"]).get("source") != "telegram_app"  # stored once, by the CRM's send
    assert (phone_reply["message_text"], phone_reply["is_outgoing"], phone_reply["message_type"]) == (
        "reply from the phone", True, "manager")
    assert json.loads(phone_reply["metadata"])["source"] == "telegram_app"
    assert deleted["deleted_at"] is not None and deleted["message_text"] == "to be deleted"  # kept, marked
    assert len(rows) == 4  # nothing twice, and the login code is no message
    assert not any("52917" in (row["message_text"] or "") for row in rows)

    pool = await stack.db()
    state = await pool.fetchrow("SELECT account_state, account_state_reason FROM messenger_integrations"
                                " WHERE id = $1", account.integration_id)
    assert (state["account_state"], state["account_state_reason"]) == ("authorized", "login")
    alerts = await pool.fetch("SELECT title, body, data FROM notifications WHERE organization_id = $1"
                              " AND type = 'telegram_login_alert'", tenant.organization_id)
    assert len(alerts) == 1
    assert "52917" not in json.dumps([dict(alert) for alert in alerts], default=str)
    assert "52917" not in stack.crm.log_text()
