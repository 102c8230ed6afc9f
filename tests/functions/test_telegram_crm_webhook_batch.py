"""telegram-crm-webhook's batches (the contract's "Batched delivery"), posted signed as crm_server delivers them: a
batch stores what the same events posted one by one store, field by field; redeliveries within and across batches
are one row each; a malformed event fails alone; a failed file fetch is that event's retry; the whole batch is
refused as a single event is (signature, disabled integration, malformed envelope)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from functions._shared.event_batch import MAX_BATCH_EVENTS
from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.functions.conftest import (
    FunctionsHost,
    Organization,
    connect_account,
    count,
    create_client,
    event_body,
    integration_secret,
    webhook_request,
)
from tests.helpers.crm_media_standin import CrmMediaStandIn, serve_crm_media_standin

MakeOrganization = Callable[[], Awaitable[Organization]]
PHOTO = b"\xff\xd8\xff\xe0 a jpeg in a batch " * 100
_users = itertools.count(int(time.time() * 1000) % 1_000_000 * 100 + 7)


def user() -> int:
    return next(_users)


@dataclass(frozen=True)
class Hook:
    organization: Organization
    integration_id: str
    phone: str
    key: str
    secret: str

    @property
    def account(self) -> str:
        return self.phone.lstrip("+")

    def event(self, kind: str | None, **fields: Any) -> dict[str, Any]:
        return event_body(self.organization.id, self.phone, kind, **fields)

    def message(self, from_id: int, message_id: int, text: str = "hello", **fields: Any) -> dict[str, Any]:
        return self.event(None, **{"from_id": from_id, "from_username": f"user{from_id}", "from_first_name": "Ivan",
                                   "from_last_name": "Petrov", "chat_id": from_id, "message_id": message_id,
                                   "text": text, **fields})


async def make_hook(http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
                    functions_host: FunctionsHost, organization: Organization, phone: str | None = None) -> Hook:
    connected = await connect_account(http, crm, crm_admin, organization, login=False, phone=phone)
    key, secret = await integration_secret(db, functions_host.sealer, connected.integration_id)
    return Hook(organization, connected.integration_id, connected.phone, key, secret)


@pytest.fixture
async def hook(http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
               functions_host: FunctionsHost, make_organization: MakeOrganization) -> Hook:
    return await make_hook(http, crm, crm_admin, db, functions_host, await make_organization())


def batch_body(hook: Hook, events: list[Any], batch_id: str | None = None) -> dict[str, Any]:
    return {"batch_id": batch_id or str(uuid.uuid4()), "project_id": hook.organization.id,
            "account_phone": hook.account, "events": events}


async def post_batch(http: httpx.AsyncClient, hook: Hook, events: list[Any], *, batch_id: str | None = None,
                     expect: int = 200) -> dict[str, Any]:
    payload = batch_body(hook, events, batch_id)
    body, headers = webhook_request(hook.secret, payload, event_id=payload["batch_id"])
    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)
    assert response.status_code == expect, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def post_single(http: httpx.AsyncClient, hook: Hook, payload: dict[str, Any]) -> dict[str, Any]:
    body, headers = webhook_request(hook.secret, payload, event_id=str(uuid.uuid4()))
    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# --- what is stored -------------------------------------------------------------------------------------------------

def conversation(hook: Hook, users: dict[str, int], known_phone: str) -> list[dict[str, Any]]:
    """Every event type, in one order a chat can produce them (ids and times fixed, so two runs compare)."""
    a, b, c, d = users["a"], users["b"], users["c"], users["d"]
    return [
        hook.message(a, 10, "Do you deliver?"),
        hook.message(a, 11, "To Moscow?", timestamp="2026-12-01T10:01:00Z"),
        # The CRM knew this client by phone before they wrote: linked, not a new client.
        hook.message(b, 20, "Hi, it is me", from_phone=known_phone, from_first_name=None, from_last_name=None),
        hook.event("message.outgoing", chat_id=a, to_id=a, message_id=12, text="Yes, tomorrow",
                   timestamp="2026-12-01T10:02:00Z"),
        # A conversation the manager started from the phone: its client is made by the outgoing message...
        hook.event("message.outgoing", chat_id=c, to_id=c, message_id=30, text="Hello from the shop"),
        # ... and found by the client's answer.
        hook.message(c, 31, "Hello shop", timestamp="2026-12-01T10:03:00Z"),
        hook.event("message.edited", chat_id=a, message_id=10, text="Do you deliver on Sundays?",
                   edit_date="2026-12-01T10:05:00Z"),
        # An edit that overtook its message (stored below).
        hook.event("message.edited", chat_id=a, message_id=13, text="typo fixed", edit_date="2026-12-01T10:06:00Z"),
        hook.message(a, 13, "tpyo", timestamp="2026-12-01T10:04:00Z"),
        hook.event("message.deleted", chat_id=b, message_ids=[20]),
        hook.event("message.deleted", chat_id=None, message_ids=[777]),
        hook.event("message.read", chat_id=a, max_id=12, direction="outbox"),
        hook.event("message.read", chat_id=a, max_id=11, direction="inbox"),
        hook.message(d, 40, "from the history", history=True, timestamp="2026-11-01T09:00:00Z"),
        hook.event("message.outgoing", chat_id=d, to_id=d, message_id=41, text="old answer", history=True,
                   timestamp="2026-11-01T09:01:00Z"),
        hook.event("account.status", state="authorized", reason="login"),
        hook.event("account.login_alert", alert="new_login", device="Desktop", location="Berlin"),
        # A redelivery inside the batch.
        hook.message(a, 11, "To Moscow?", timestamp="2026-12-01T10:01:00Z"),
        hook.event("message.reaction", chat_id=a, message_id=10),
    ]


async def stored_state(db: asyncpg.Pool, hook: Hook) -> dict[str, Any]:
    """What the organization has, without its own ids (clients named by their Telegram user)."""
    organization = hook.organization.id
    messages = await db.fetch(
        "SELECT c.telegram_user_id AS client, m.message_text, m.message_type, m.messenger_type, m.message_status, "
        "m.is_outgoing, m.is_read, m.external_message_id, m.external_account, m.external_chat_id, m.file_url, "
        "m.file_type, m.file_name, m.sender_name, m.metadata - 'event_id' AS metadata, m.created_at, m.edited_at, "
        "m.deleted_at, m.idempotency_key, m.integration_id IS NOT NULL AS has_integration "
        "FROM public.chat_messages m JOIN public.clients c ON c.id = m.client_id WHERE m.organization_id = $1 "
        "ORDER BY m.external_chat_id, m.external_message_id", organization)
    clients = await db.fetch(
        "SELECT name, phone, telegram_user_id, telegram_chat_id, telegram_username, is_active, last_message_at "
        "FROM public.clients WHERE organization_id = $1 ORDER BY telegram_user_id NULLS LAST, name", organization)
    notifications = await db.fetch(
        "SELECT n.type, n.title, n.body, n.data - 'clientId' - 'messageId' - 'integrationId' - 'eventId' AS data, "
        "m.external_message_id, n.data ? 'integrationId' AS has_integration "
        "FROM public.notifications n LEFT JOIN public.chat_messages m ON m.id::text = n.data ->> 'messageId' "
        "WHERE n.organization_id = $1 ORDER BY n.type, m.external_message_id NULLS LAST", organization)
    pending = await db.fetch(
        "SELECT external_account, external_chat_id, external_message_id, kind, happened_at, message_text "
        "FROM public.telegram_pending_events WHERE organization_id = $1 ORDER BY external_message_id", organization)
    marks = await db.fetch(
        "SELECT external_account, external_chat_id, direction, max_id FROM public.telegram_read_marks "
        "WHERE organization_id = $1 ORDER BY direction", organization)
    integration = await db.fetchrow(
        "SELECT account_state, account_state_reason, account_state_at FROM public.messenger_integrations "
        "WHERE id = $1", hook.integration_id)
    state = {"messages": [dict(row) for row in messages], "clients": [dict(row) for row in clients],
             "notifications": [dict(row) for row in notifications], "pending": [dict(row) for row in pending],
             "marks": [dict(row) for row in marks], "integration": dict(integration)}
    # The two organizations' accounts differ only by their phone (one account cannot serve two organizations).
    text = json.dumps(state, default=str, sort_keys=True)
    return json.loads(text.replace(hook.phone, "<account>").replace(hook.account, "<account>"))


async def test_a_batch_of_every_event_type_stores_what_the_events_one_by_one_store(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        functions_host: FunctionsHost, make_organization: MakeOrganization) -> None:
    one_by_one = await make_hook(http, crm, crm_admin, db, functions_host, await make_organization())
    batched = await make_hook(http, crm, crm_admin, db, functions_host, await make_organization())
    users = {name: user() for name in "abcd"}
    known_phone = f"+7999{users['b'] % 10_000_000:07d}"
    for hook in (one_by_one, batched):
        await create_client(db, hook.organization.id, name="Known by phone", phone=known_phone)
    events = conversation(one_by_one, users, known_phone)
    # The same events (ids included) for the other organization.
    batch_events = [{**copy.deepcopy(event), "project_id": batched.organization.id,
                     "account_phone": batched.account} for event in events]

    single_answers = [await post_single(http, one_by_one, event) for event in events]
    answer = await post_batch(http, batched, batch_events)

    assert await stored_state(db, batched) == await stored_state(db, one_by_one)
    results = answer["results"]
    assert [result["event_id"] for result in results] == [event["event_id"] for event in events]
    assert all(result["ok"] for result in results), results
    # The message kinds answer as one by one: the same duplicates (the redelivery in the batch is one).
    for event, single, result in zip(events, single_answers, results, strict=True):
        if event.get("type") in (None, "message.outgoing"):
            assert result["duplicate"] == single["duplicate"], (event, result)
    assert [result["duplicate"] for result in results[:6]] == [False] * 6
    assert results[17]["duplicate"] is True and results[17]["messageId"] == results[1]["messageId"]
    assert results[18] == {"event_id": events[18]["event_id"], "ok": True, "ignored": True,
                           "type": "message.reaction"}


async def test_a_redelivered_batch_stores_nothing_new_and_answers_duplicates(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    first_user, second_user = user(), user()
    events = [hook.message(first_user, 1, "one"), hook.message(second_user, 1, "other chat, same id"),
              hook.message(first_user, 2, "two"),
              hook.event("message.outgoing", chat_id=first_user, to_id=first_user, message_id=3, text="answer")]
    first = await post_batch(http, hook, events)
    stored = await count(db, "chat_messages", hook.organization.id)
    notified = await count(db, "notifications", hook.organization.id)

    # crm_server retries the batch (another POST, another batch id) and a later batch repeats an event.
    again = await post_batch(http, hook, events)
    later = await post_batch(http, hook, [events[2], hook.message(first_user, 4, "four")])

    assert stored == 4 and notified == 3
    assert [result["duplicate"] for result in first["results"]] == [False] * 4
    assert [result["duplicate"] for result in again["results"]] == [True] * 4
    assert [result["messageId"] for result in again["results"]] == [result["messageId"]
                                                                    for result in first["results"]]
    assert [result["duplicate"] for result in later["results"]] == [True, False]
    assert await count(db, "chat_messages", hook.organization.id) == 5
    assert await count(db, "notifications", hook.organization.id) == 4
    # Two chats, each with its own client.
    assert await count(db, "clients", hook.organization.id) == 2


async def test_two_events_with_one_key_in_a_batch_are_one_row(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    sender = user()
    # An incoming message and a phone-sent one cannot share a Telegram id in one chat: the first stored wins.
    events = [hook.message(sender, 7, "first"), hook.message(sender, 7, "first, redelivered"),
              hook.event("message.outgoing", chat_id=sender, to_id=sender, message_id=7, text="same id")]

    answer = await post_batch(http, hook, events)

    results = answer["results"]
    assert [result["duplicate"] for result in results] == [False, True, True]
    assert len({result["messageId"] for result in results}) == 1
    rows = await db.fetch("SELECT message_text FROM public.chat_messages WHERE organization_id = $1",
                          hook.organization.id)
    assert [row["message_text"] for row in rows] == ["first"]
    assert await count(db, "notifications", hook.organization.id) == 1


async def test_a_malformed_event_fails_alone_naming_its_field(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    sender = user()
    good = hook.message(sender, 1, "fine")
    no_sender = {key: value for key, value in hook.message(sender, 2).items() if key != "from_id"}
    bad_read = hook.event("message.read", chat_id=sender, max_id=5, direction="sideways")
    other_organization = {**hook.message(sender, 3), "project_id": str(uuid.uuid4())}

    answer = await post_batch(http, hook, [good, no_sender, "not an object", bad_read, other_organization,
                                           hook.message(sender, 4, "also fine")])

    results = answer["results"]
    assert [result["ok"] for result in results] == [True, False, False, False, False, True]
    assert results[1] == {"event_id": no_sender["event_id"], "ok": False, "retry": False,
                          "error": {"code": "VALIDATION_ERROR", "message": "from_id is required",
                                    "field": "from_id"}}
    assert results[2]["error"]["field"] == "events" and results[2]["event_id"] is None
    assert results[3]["error"]["field"] == "direction" and results[3]["retry"] is False
    assert results[4]["error"] == {"code": "PROJECT_MISMATCH", "field": "project_id",
                                   "message": "project_id is not this integration's organization"}
    texts = await db.fetch("SELECT message_text FROM public.chat_messages WHERE organization_id = $1 "
                           "ORDER BY created_at, message_text", hook.organization.id)
    assert sorted(row["message_text"] for row in texts) == ["also fine", "fine"]


async def test_the_batch_envelope_is_validated_as_a_single_body_is(http: httpx.AsyncClient, hook: Hook) -> None:
    sender = user()
    too_many = [hook.message(sender, number) for number in range(1, MAX_BATCH_EVENTS + 2)]

    over = await post_batch(http, hook, too_many, expect=422)
    empty = await post_batch(http, hook, [], expect=422)
    not_a_list = await post_batch(http, hook, {"event": 1}, expect=422)  # type: ignore[arg-type]

    assert (over["code"], over["field"]) == ("VALIDATION_ERROR", "events")
    assert empty["field"] == "events" and not_a_list["field"] == "events"
    payload = {"project_id": hook.organization.id, "events": [hook.message(sender, 1)]}
    body, headers = webhook_request(hook.secret, payload)
    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)
    assert (response.status_code, response.json()["field"]) == (422, "batch_id")
    other = {**batch_body(hook, [hook.message(sender, 1)]), "project_id": str(uuid.uuid4())}
    body, headers = webhook_request(hook.secret, other, event_id=other["batch_id"])
    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)
    assert (response.status_code, response.json()["code"]) == (403, "PROJECT_MISMATCH")


async def test_a_batch_of_500_events_in_many_chats_is_stored_in_order(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    senders = [user() for _ in range(50)]
    events = [hook.message(senders[number % 50], 1000 + number, f"message {number}",
                           timestamp=f"2026-12-01T10:{number // 60:02d}:{number % 60:02d}Z")
              for number in range(MAX_BATCH_EVENTS)]

    answer = await post_batch(http, hook, events)

    assert [result["ok"] and not result["duplicate"] for result in answer["results"]] == [True] * MAX_BATCH_EVENTS
    assert await count(db, "chat_messages", hook.organization.id) == MAX_BATCH_EVENTS
    assert await count(db, "clients", hook.organization.id) == 50
    assert await count(db, "notifications", hook.organization.id) == MAX_BATCH_EVENTS
    last = await db.fetchrow("SELECT last_message_at, name FROM public.clients WHERE organization_id = $1 AND "
                             "telegram_user_id = $2", hook.organization.id, str(senders[0]))
    # The client's newest message is its last in the batch (number 450: 10:07:30).
    assert last["last_message_at"].isoformat() == "2026-12-01T10:07:30+00:00"
    assert last["name"] == "Ivan Petrov"



async def test_a_batch_reads_the_stored_messages_of_its_own_keys_not_of_the_whole_organization(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    """The rpc looks its events' keys up one index probe each: its cost must not grow with how many messages the
    organization has stored (the batch's temp table has no statistics, and a plain join hashed them all)."""
    senders = [user() for _ in range(20)]
    await post_batch(http, hook, [hook.message(senders[number % 20], 5000 + number) for number in range(400)])
    assert await count(db, "chat_messages", hook.organization.id) == 400
    await db.execute("ANALYZE public.chat_messages")  # as autovacuum would have: statistics that know them
    events = [{"i": index, "kind": "message", "p_telegram_user_id": str(senders[index]),
               "p_telegram_chat_id": str(senders[index]), "p_external_message_id": str(9000 + index),
               "p_message_text": "new", "p_notification_title": "t", "p_notification_body": "b"}
              for index in range(2)]
    # Rows of chat_messages this backend read (pg_stat_xact_*: exact, this backend's counts not yet reported).
    rows_read = ("SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
                 "WHERE relid = 'public.chat_messages'::regclass")
    async with db.acquire() as connection, connection.transaction():
        before = await connection.fetchval(rows_read) or 0
        answer = await connection.fetchval("SELECT public.ingest_telegram_batch($1, $2, $3::jsonb)",
                                           hook.organization.id, hook.integration_id, events)
        read = await connection.fetchval(rows_read) - before
    assert [result["duplicate"] for result in answer] == [False, False]
    assert read < 40  # a few per event, never the organization's 400


async def test_two_batches_in_one_transaction_each_answer_only_their_own_events(
        db: asyncpg.Pool, hook: Hook) -> None:
    """The rpc's working tables live for the database session: a second call in the same transaction starts empty."""
    def events(base: int, count: int) -> list[dict[str, Any]]:
        sender = user()
        return [{"i": index, "kind": "message", "p_telegram_user_id": str(sender), "p_telegram_chat_id": str(sender),
                 "p_external_message_id": str(base + index), "p_message_text": f"m{base + index}",
                 "p_notification_title": "t", "p_notification_body": "b"} for index in range(count)]

    async with db.acquire() as connection, connection.transaction():
        call = "SELECT public.ingest_telegram_batch($1, $2, $3::jsonb)"
        first = await connection.fetchval(call, hook.organization.id, hook.integration_id, events(100, 3))
        second = await connection.fetchval(call, hook.organization.id, hook.integration_id, events(200, 2))
    assert [result["i"] for result in first] == [0, 1, 2]
    assert [result["i"] for result in second] == [0, 1]
    assert not any(result["duplicate"] for result in first + second)
    assert await count(db, "chat_messages", hook.organization.id) == 5

# --- who may post ---------------------------------------------------------------------------------------------------

async def test_a_batch_with_a_bad_signature_is_refused_and_stores_nothing(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    payload = batch_body(hook, [hook.message(user(), 1)])
    body, headers = webhook_request(hook.secret, payload, event_id=payload["batch_id"])
    tampered = body.replace(b'"hello"', b'"HELLO"')
    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=tampered, headers=headers)

    assert response.status_code == 401
    assert await count(db, "chat_messages", hook.organization.id) == 0


async def test_a_batch_signed_under_another_webhook_id_is_refused(http: httpx.AsyncClient, hook: Hook) -> None:
    payload = batch_body(hook, [hook.message(user(), 1)])
    body, headers = webhook_request(hook.secret, payload, event_id=payload["batch_id"])
    headers["webhook-id"] = str(uuid.uuid4())  # the signature covers the id it was made with

    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)

    assert response.status_code == 401


async def test_a_batch_for_a_disabled_integration_is_404(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    await db.execute("UPDATE public.messenger_integrations SET is_enabled = false WHERE id = $1", hook.integration_id)

    answer = await post_batch(http, hook, [hook.message(user(), 1)], expect=404)

    assert answer["success"] is False
    assert await count(db, "chat_messages", hook.organization.id) == 0


async def test_only_service_role_may_call_the_batch_rpc(db: asyncpg.Pool) -> None:
    signature = "public.ingest_telegram_batch(uuid, uuid, jsonb)"
    allowed = {role: await db.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')", role, signature)
               for role in ("anon", "authenticated", "service_role")}
    assert allowed == {"anon": False, "authenticated": False, "service_role": True}


# --- media ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def media_server() -> Iterator[CrmMediaStandIn]:
    with serve_crm_media_standin() as served:
        yield served


@pytest.fixture
async def media_hook(hook: Hook, db: asyncpg.Pool, media_server: CrmMediaStandIn) -> Hook:
    """The hook, its crm_server the media stand-in (the origin media URLs must have is crmApiUrl's)."""
    await db.execute("UPDATE public.messenger_integrations SET settings = jsonb_set(settings, '{crmApiUrl}', "
                     "to_jsonb($2::text)) WHERE id = $1", hook.integration_id, media_server.base_url)
    return hook


async def test_media_in_a_batch_one_failed_fetch_is_retried_alone_and_redeliveries_are_not_fetched_again(
        http: httpx.AsyncClient, db: asyncpg.Pool, media_hook: Hook, media_server: CrmMediaStandIn) -> None:
    hook, sender = media_hook, user()
    photos = [media_server.media(PHOTO + bytes([number]), "photo", content_type="image/jpeg")
              for number in range(3)]
    flaky = media_server.media(PHOTO, "document", content_type="application/pdf", file_name="invoice.pdf",
                               failures=[503])
    events = [hook.message(sender, 1, "", media=photos[0]), hook.message(sender, 2, "", media=photos[1]),
              hook.message(sender, 3, "the invoice", media=flaky), hook.message(sender, 4, "no file"),
              hook.event("message.outgoing", chat_id=sender, to_id=sender, message_id=5, text="", media=photos[2]),
              # The same message twice in the batch: one fetch.
              hook.message(sender, 1, "", media=photos[0])]

    first = await post_batch(http, hook, events)

    results = first["results"]
    assert [result["ok"] for result in results] == [True, True, False, True, True, True]
    assert results[2]["retry"] is True and results[2]["error"]["code"] == "MEDIA_FETCH_FAILED"
    assert results[5]["duplicate"] is True and results[5]["messageId"] == results[0]["messageId"]
    assert await count(db, "chat_messages", hook.organization.id) == 4
    row = await db.fetchrow("SELECT file_url, metadata FROM public.chat_messages WHERE id = $1",
                            results[4]["messageId"])
    assert row["file_url"].endswith(f"/{sender}/5-photo.jpg")
    assert row["metadata"]["media"]["sha256"] == hashlib.sha256(PHOTO + bytes([2])).hexdigest()

    # crm_server delivers the batch again: only the failed event is fetched (and now stored).
    again = await post_batch(http, hook, events)

    assert [result["ok"] for result in again["results"]] == [True] * 6
    assert [result["duplicate"] for result in again["results"]] == [True, True, False, True, True, True]
    assert [media_server.fetch_count(media["url"]) for media in (*photos, flaky)] == [1, 1, 1, 2]
    assert await count(db, "chat_messages", hook.organization.id) == 5
    invoice = await db.fetchrow("SELECT file_name, message_text FROM public.chat_messages WHERE id = $1",
                                again["results"][2]["messageId"])
    assert (invoice["file_name"], invoice["message_text"]) == ("invoice.pdf", "the invoice")


async def test_the_answer_is_json_with_one_result_per_event(http: httpx.AsyncClient, hook: Hook) -> None:
    events = [hook.message(user(), 1), hook.event("account.status", state="authorized")]
    payload = batch_body(hook, events)
    body, headers = webhook_request(hook.secret, payload, event_id=payload["batch_id"])

    response = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)

    answer = json.loads(response.content)
    assert answer["success"] is True
    assert [result["event_id"] for result in answer["results"]] == [event["event_id"] for event in events]
    assert answer["results"][1] == {"event_id": events[1]["event_id"], "ok": True, "applied": True}


async def test_a_replayed_batch_is_answered_from_memory_with_every_event_a_duplicate(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    payload = batch_body(hook, [hook.message(user(), 1), hook.event("account.status", state="authorized")])
    body, headers = webhook_request(hook.secret, payload, event_id=payload["batch_id"])
    first = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)

    replayed = await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)

    assert first.json()["results"][0]["duplicate"] is False
    assert replayed.status_code == 200
    assert replayed.json()["results"][0] == {**first.json()["results"][0], "duplicate": True}
    assert replayed.json()["results"][1] == first.json()["results"][1]
    assert await count(db, "chat_messages", hook.organization.id) == 1


async def test_concurrent_batches_and_single_posts_of_the_same_chats_store_each_message_once(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    senders = [user() for _ in range(5)]
    messages = [hook.message(senders[number % 5], 100 + number, f"message {number}") for number in range(40)]
    # Overlapping batches, in different orders (crm_server retrying one while the next is under way), and single
    # posts of some of the same events.
    deliveries = [post_batch(http, hook, messages[:30]), post_batch(http, hook, list(reversed(messages[10:]))),
                  post_batch(http, hook, messages[5:35]), *(post_single(http, hook, event) for event in messages[::7])]

    await asyncio.gather(*deliveries)

    assert await count(db, "chat_messages", hook.organization.id) == 40
    assert await count(db, "clients", hook.organization.id) == 5
    assert await count(db, "notifications", hook.organization.id) == 40
