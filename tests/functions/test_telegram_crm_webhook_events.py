"""telegram-crm-webhook's conversation events (the contract's "Conversation events"), posted signed as crm_server
delivers them: each type stored and read back through supabase-py as the organization's user sees it; redelivery
changes nothing; an edit, deletion or read that overtakes its message ends in the same state; a phone-sent message
that is also a /telegram/send result is one row, whichever is stored first."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from supabase import AsyncClient

from tests.conftest import UserClientFactory
from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.functions.conftest import (
    FunctionsHost,
    Organization,
    connect_account,
    count,
    create_client,
    event_body,
    full_payload,
    integration_secret,
    sandbox_user,
    webhook_request,
)

MakeOrganization = Callable[[], Awaitable[Organization]]
COLUMNS = ("id, client_id, message_text, message_type, is_outgoing, is_read, message_status, edited_at, deleted_at, "
           "external_message_id, metadata, idempotency_key")
_users = itertools.count(int(time.time() * 1000) % 1_000_000 * 100)


@dataclass(frozen=True)
class Hook:
    organization: Organization
    integration_id: str
    phone: str
    key: str
    secret: str
    member: AsyncClient

    def event(self, kind: str | None, **fields: Any) -> dict[str, Any]:
        return event_body(self.organization.id, self.phone, kind, **fields)

    def message(self, user: int, message_id: int, text: str = "hello") -> dict[str, Any]:
        return full_payload(self.organization.id, self.phone, from_id=user, message_id=message_id, text=text,
                            type="message")

    def outgoing(self, user: int, message_id: int, text: str = "from my phone", **fields: Any) -> dict[str, Any]:
        return self.event("message.outgoing", chat_id=user, to_id=user, message_id=message_id, text=text, **fields)

    def edited(self, user: int, message_id: int, text: str, edit_date: str, outgoing: bool = False) -> dict[str, Any]:
        return self.event("message.edited", chat_id=user, message_id=message_id, text=text, edit_date=edit_date,
                          outgoing=outgoing)

    def deleted(self, chat: int | None, *message_ids: int) -> dict[str, Any]:
        return self.event("message.deleted", chat_id=chat, message_ids=list(message_ids))

    def read(self, user: int, max_id: int, direction: str) -> dict[str, Any]:
        return self.event("message.read", chat_id=user, max_id=max_id, direction=direction)

    async def rows(self, **equal: Any) -> list[dict[str, Any]]:
        """The organization's chat rows, as its own user reads them (supabase-py, RLS)."""
        query = self.member.table("chat_messages").select(COLUMNS)
        for column, value in equal.items():
            query = query.eq(column, value)
        return (await query.order("created_at").execute()).data

    async def row(self, message_id: int) -> dict[str, Any]:
        found = await self.rows(external_message_id=str(message_id))
        assert len(found) == 1, found
        return found[0]


@pytest.fixture
async def hook(http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
               functions_host: FunctionsHost, make_organization: MakeOrganization,
               user_client: UserClientFactory) -> Hook:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization, login=False)
    key, secret = await integration_secret(db, functions_host.sealer, connected.integration_id)
    return Hook(organization, connected.integration_id, connected.phone, key, secret,
                await user_client(organization.user_id))


async def post(http: httpx.AsyncClient, hook: Hook, payload: dict[str, Any]) -> dict[str, Any]:
    # Every delivery under a fresh webhook-id: a redelivery that reaches the database, not the replay cache.
    body, headers = webhook_request(hook.secret, payload, event_id=str(uuid.uuid4()))
    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def user() -> int:
    return next(_users)


# --- each type ------------------------------------------------------------------------------------------------------

async def test_a_phone_sent_message_is_the_managers_and_stored_once(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    client_user = user()
    await post(http, hook, hook.message(client_user, 100, "Do you deliver?"))
    notified = await count(db, "notifications", hook.organization.id)

    first = await post(http, hook, hook.outgoing(client_user, 101, "Yes, tomorrow"))
    again = await post(http, hook, hook.outgoing(client_user, 101, "Yes, tomorrow"))
    assert (first["duplicate"], again["duplicate"], again["messageId"]) == (False, True, first["messageId"])

    row = await hook.row(101)
    assert (row["client_id"], row["message_text"], row["message_type"], row["is_outgoing"], row["message_status"]) \
        == (first["clientId"], "Yes, tomorrow", "manager", True, "sent")
    assert row["metadata"]["source"] == "telegram_app"
    assert first["clientId"] == (await hook.row(100))["client_id"]  # the same conversation
    assert await count(db, "notifications", hook.organization.id) == notified  # the manager wrote it


async def test_a_conversation_started_from_the_phone_makes_its_client(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    client_user = user()
    answer = await post(http, hook, hook.outgoing(client_user, 7, "Hello, this is your courier"))
    client = await db.fetchrow("SELECT * FROM public.clients WHERE id = $1", answer["clientId"])
    assert (client["organization_id"], client["telegram_user_id"], client["telegram_chat_id"]) == \
        (hook.organization.id, str(client_user), str(client_user))
    # The client's reply joins that client.
    reply = await post(http, hook, hook.message(client_user, 8, "Thanks"))
    assert reply["clientId"] == answer["clientId"]


async def test_an_edit_replaces_the_text_and_keeps_the_history(http: httpx.AsyncClient, hook: Hook) -> None:
    client_user = user()
    await post(http, hook, hook.message(client_user, 200, "I want 2 pizzas"))
    applied = await post(http, hook, hook.edited(client_user, 200, "I want 3 pizzas", "2026-12-01T10:05:00Z"))
    assert applied["status"] == "applied"

    row = await hook.row(200)
    assert row["message_text"] == "I want 3 pizzas"
    assert row["edited_at"].startswith("2026-12-01T10:05:00")
    assert [entry["text"] for entry in row["metadata"]["edits"]] == ["I want 2 pizzas"]

    # The same edit again, and an older one arriving late: nothing changes.
    assert (await post(http, hook, hook.edited(client_user, 200, "I want 3 pizzas",
                                               "2026-12-01T10:05:00Z")))["status"] == "duplicate"
    assert (await post(http, hook, hook.edited(client_user, 200, "I want 2.5 pizzas",
                                               "2026-12-01T10:03:00Z")))["status"] == "duplicate"
    assert await hook.row(200) == row

    await post(http, hook, hook.edited(client_user, 200, "I want 4 pizzas", "2026-12-01T10:09:00Z"))
    row = await hook.row(200)
    assert row["message_text"] == "I want 4 pizzas"
    assert [entry["text"] for entry in row["metadata"]["edits"]] == ["I want 2 pizzas", "I want 3 pizzas"]


async def test_the_managers_own_message_can_be_edited_from_the_phone(http: httpx.AsyncClient, hook: Hook) -> None:
    client_user = user()
    await post(http, hook, hook.outgoing(client_user, 210, "See you at 5"))
    await post(http, hook, hook.edited(client_user, 210, "See you at 6", "2026-12-01T10:01:00Z", outgoing=True))
    row = await hook.row(210)
    assert (row["message_text"], row["is_outgoing"], row["metadata"]["edits"][0]["text"]) == \
        ("See you at 6", True, "See you at 5")


async def test_a_deletion_marks_the_rows_and_keeps_them(http: httpx.AsyncClient, hook: Hook) -> None:
    client_user = user()
    for message_id in (300, 301, 302):
        await post(http, hook, hook.message(client_user, message_id, f"message {message_id}"))
    # Telegram names no chat for a private chat's deletion.
    answer = await post(http, hook, hook.deleted(None, 300, 302))
    assert (answer["deleted"], answer["pending"]) == (2, 0)
    rows = {row["external_message_id"]: row for row in await hook.rows()}
    assert rows["300"]["deleted_at"] is not None and rows["302"]["deleted_at"] is not None
    assert rows["301"]["deleted_at"] is None
    assert rows["300"]["message_text"] == "message 300"  # kept

    again = await post(http, hook, hook.deleted(None, 300))
    assert again["deleted"] == 1
    assert (await hook.row(300))["deleted_at"] == rows["300"]["deleted_at"]


async def test_a_deletion_in_a_named_chat_touches_only_that_chat(http: httpx.AsyncClient, hook: Hook) -> None:
    first, second = user(), user()
    # Two senders of the original plan may reuse ids across chats; crm_server's named chat decides.
    await post(http, hook, hook.message(first, 310))
    await post(http, hook, hook.message(second, 310))
    await post(http, hook, hook.deleted(second, 310))
    deleted = {row["client_id"]: row["deleted_at"] is not None for row in await hook.rows(external_message_id="310")}
    assert sorted(deleted.values()) == [False, True]


async def test_reads_mark_outgoing_rows_read_and_never_back(http: httpx.AsyncClient, hook: Hook) -> None:
    client_user = user()
    for message_id in (400, 401, 402):
        await post(http, hook, hook.outgoing(client_user, message_id, f"reply {message_id}"))
    answer = await post(http, hook, hook.read(client_user, 401, "outbox"))
    assert answer["updated"] == 2
    statuses = {row["external_message_id"]: row["message_status"] for row in await hook.rows()}
    assert statuses == {"400": "read", "401": "read", "402": "sent"}

    # A lower mark redelivered late changes nothing.
    await post(http, hook, hook.read(client_user, 400, "outbox"))
    assert {row["external_message_id"]: row["message_status"] for row in await hook.rows()} == statuses


async def test_an_inbox_read_marks_the_clients_messages_read(http: httpx.AsyncClient, hook: Hook) -> None:
    client_user = user()
    for message_id in (410, 411):
        await post(http, hook, hook.message(client_user, message_id))
    await post(http, hook, hook.read(client_user, 410, "inbox"))
    assert {row["external_message_id"]: row["is_read"] for row in await hook.rows()} == {"410": True, "411": False}


async def test_a_message_imported_from_history_is_stored_once_and_notifies_no_one(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    client_user = user()
    imported = {**hook.message(client_user, 420, "an old question"), "history": True}
    await post(http, hook, imported)
    await post(http, hook, {**imported, "event_id": str(uuid.uuid4())})  # imported twice
    assert (await hook.row(420))["metadata"]["history"] is True
    assert await count(db, "notifications", hook.organization.id) == 0
    await post(http, hook, hook.message(client_user, 421, "a new one"))
    assert await count(db, "notifications", hook.organization.id) == 1


# --- out of order ---------------------------------------------------------------------------------------------------

async def test_an_edit_before_its_message_applies_when_the_message_arrives(http: httpx.AsyncClient, hook: Hook) -> None:
    client_user = user()
    early = await post(http, hook, hook.edited(client_user, 500, "second version", "2026-12-01T10:02:00Z"))
    assert early["status"] == "pending"
    await post(http, hook, hook.edited(client_user, 500, "second version", "2026-12-01T10:02:00Z"))  # redelivered
    await post(http, hook, hook.edited(client_user, 500, "third version", "2026-12-01T10:04:00Z"))
    assert await hook.rows() == []

    await post(http, hook, hook.message(client_user, 500, "first version"))
    row = await hook.row(500)
    assert row["message_text"] == "third version"
    assert row["edited_at"].startswith("2026-12-01T10:04:00")
    assert [entry["text"] for entry in row["metadata"]["edits"]] == ["first version", "second version"]


async def test_a_deletion_before_its_message_applies_when_the_message_arrives(
        http: httpx.AsyncClient, hook: Hook) -> None:
    client_user = user()
    early = await post(http, hook, hook.deleted(None, 510))
    assert (early["deleted"], early["pending"]) == (0, 1)
    await post(http, hook, hook.deleted(None, 510))  # redelivered
    await post(http, hook, hook.message(client_user, 510, "oops"))
    row = await hook.row(510)
    assert row["deleted_at"] is not None and row["message_text"] == "oops"


async def test_a_read_before_the_outgoing_row_applies_when_it_arrives(http: httpx.AsyncClient, hook: Hook) -> None:
    client_user = user()
    await post(http, hook, hook.read(client_user, 521, "outbox"))
    await post(http, hook, hook.read(client_user, 520, "inbox"))
    await post(http, hook, hook.outgoing(client_user, 521, "read already"))
    await post(http, hook, hook.outgoing(client_user, 522, "not yet"))
    await post(http, hook, hook.message(client_user, 520, "read on the phone"))
    rows = {row["external_message_id"]: row for row in await hook.rows()}
    assert (rows["521"]["message_status"], rows["522"]["message_status"], rows["520"]["is_read"]) == \
        ("read", "sent", True)


async def test_an_edit_racing_its_message_is_never_lost(http: httpx.AsyncClient, hook: Hook) -> None:
    client_user = user()
    pairs = [(hook.message(client_user, 600 + n, "first"),
              hook.edited(client_user, 600 + n, "edited", "2026-12-01T10:02:00Z")) for n in range(8)]
    # Each message and its edit at once (and each twice): whichever the database sees first, the edit lands.
    await asyncio.gather(*(post(http, hook, body) for pair in pairs for body in (*pair, *pair)))
    rows = await hook.rows()
    assert len(rows) == 8
    assert {row["message_text"] for row in rows} == {"edited"}
    assert all([entry["text"] for entry in row["metadata"]["edits"]] == ["first"] for row in rows)


# --- the send's row and the phone's event ---------------------------------------------------------------------------

async def test_a_send_then_its_outgoing_event_is_one_row(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        functions_host: FunctionsHost, make_organization: MakeOrganization, user_client: UserClientFactory) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    key, secret = await integration_secret(db, functions_host.sealer, connected.integration_id)
    hook = Hook(organization, connected.integration_id, connected.phone, key, secret,
                await user_client(organization.user_id))
    user_id, _, username = sandbox_user(crm_admin)
    client_id = await create_client(db, organization.id, username=username)

    sent = await http.post("/telegram-crm-send", headers=organization.auth,
                           json={"clientId": client_id, "text": "Your order is ready"})
    assert sent.status_code == 200, sent.text
    message_id = sent.json()["messageId"]
    # crm_server could not tell this message from one sent on the phone (a retry after a lost answer).
    answer = await post(http, hook, hook.outgoing(user_id, message_id, "Your order is ready"))
    assert (answer["duplicate"], answer["messageId"]) == (True, sent.json()["savedMessageId"])
    assert len(await hook.rows(is_outgoing=True)) == 1

    # Its read ticks reach the send's row.
    await post(http, hook, hook.read(user_id, message_id, "outbox"))
    assert (await hook.row(message_id))["message_status"] == "read"

    # The phone's event first, then the send's row (the next message id the account will use): still one row.
    next_id = message_id + 1
    await post(http, hook, hook.outgoing(user_id, next_id, "On my way"))
    later = await http.post("/telegram-crm-send", headers=organization.auth,
                            json={"clientId": client_id, "text": "On my way"})
    assert later.status_code == 200, later.text
    assert later.json()["messageId"] == next_id
    row = await hook.row(next_id)
    assert row["id"] == later.json()["savedMessageId"]
    assert row["idempotency_key"] is not None and row["metadata"]["provider"] == "telegram_crm"
    assert "source" not in row["metadata"]  # the CRM sent it: not shown as written in the Telegram app
    assert row["message_status"] == "sent"  # above the client's read mark


# --- the account ----------------------------------------------------------------------------------------------------

async def test_the_accounts_state_is_shown_by_telegram_crm_status(http: httpx.AsyncClient, hook: Hook) -> None:
    await post(http, hook, hook.event("account.status", state="logged_out", reason="session revoked",
                                      timestamp="2026-12-01T11:00:00Z"))
    # An older report redelivered late does not win.
    stale = await post(http, hook, hook.event("account.status", state="authorized", reason=None,
                                              timestamp="2026-12-01T10:00:00Z"))
    assert stale["applied"] is False

    response = await http.get("/telegram-crm-status", params={"integrationId": hook.integration_id},
                              headers=hook.organization.auth)
    assert response.status_code == 200, response.text
    status = response.json()["integrations"][0]
    assert (status["accountState"], status["accountStateReason"]) == ("logged_out", "session revoked")
    assert status["lastStatusAt"].startswith("2026-12-01T11:00:00")


async def test_a_login_alert_notifies_once_and_stores_no_message(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    alert = hook.event("account.login_alert", alert="new_login", device="Telegram Desktop",
                       location="Berlin, Germany", chat_id=None)
    first = await post(http, hook, alert)
    again = await post(http, hook, alert)  # the same event, redelivered
    assert (first["duplicate"], again["duplicate"], again["notificationId"]) == \
        (False, True, first["notificationId"])
    notifications = await db.fetch("SELECT * FROM public.notifications WHERE organization_id = $1",
                                   hook.organization.id)
    assert len(notifications) == 1
    assert notifications[0]["type"] == "telegram_login_alert"
    assert notifications[0]["title"] == f"New login to the Telegram account {hook.phone}"
    assert notifications[0]["data"]["alert"] == "new_login"
    assert notifications[0]["body"] == "Telegram Desktop · Berlin, Germany"
    assert await count(db, "chat_messages", hook.organization.id) == 0


async def test_an_unknown_type_is_answered_200_and_ignored(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    answer = await post(http, hook, hook.event("message.reaction", chat_id=user(), message_id=5, reaction="👍"))
    assert answer == {"success": True, "ignored": True, "type": "message.reaction"}
    assert await count(db, "chat_messages", hook.organization.id) == 0


@pytest.mark.parametrize(("kind", "fields", "field"), [
    ("message.read", {"chat_id": 5, "direction": "outbox"}, "max_id"),
    ("message.read", {"chat_id": 5, "max_id": 3, "direction": "sideways"}, "direction"),
    ("message.read", {"chat_id": 5, "max_id": -3, "direction": "inbox"}, "max_id"),
    ("message.edited", {"chat_id": 5, "text": "x"}, "message_id"),
    ("message.deleted", {"chat_id": None, "message_ids": []}, "message_ids"),
    ("message.deleted", {"chat_id": None, "message_ids": ["abc"]}, "message_ids"),
    ("message.outgoing", {"message_id": 5, "text": "x"}, None),
    ("account.status", {"state": "Logged Out!"}, "state"),
], ids=["no max_id", "bad direction", "negative max_id", "no message_id", "no ids", "bad id", "no chat",
        "bad state"])
async def test_a_malformed_event_is_422_naming_the_field(
        http: httpx.AsyncClient, hook: Hook, kind: str, fields: dict[str, Any], field: str | None) -> None:
    body, headers = webhook_request(hook.secret, hook.event(kind, **fields))
    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)
    assert response.status_code == 422, response.text
    if field is not None:
        assert response.json()["field"] == field


async def test_events_for_a_disabled_integration_or_another_project_are_refused(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    body, headers = webhook_request(hook.secret, {**hook.read(user(), 3, "outbox"),
                                                  "project_id": str(uuid.uuid4())})
    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)
    assert (response.status_code, response.json()["code"]) == (403, "PROJECT_MISMATCH")

    await db.execute("UPDATE public.messenger_integrations SET is_enabled = false WHERE id = $1", hook.integration_id)
    body, headers = webhook_request(hook.secret, hook.read(user(), 3, "outbox"))
    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)
    assert response.status_code == 404, response.text
