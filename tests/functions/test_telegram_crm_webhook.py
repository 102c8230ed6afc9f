"""telegram-crm-webhook: who may post, what is stored (once), what is refused, and when the sender should retry."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions._shared.errors import DatabaseError, ValidationFailedError
from functions._shared.parsing import validate_model
from functions._shared.signature import sign
from functions._shared.runtime import FunctionsRuntime
from functions.host import create_functions_app
from functions.telegram_crm_webhook import WebhookPayload
from supabase_local.keys import user_token
from tests.crm_server.server_process import CrmClient, CrmServerProcess, new_phone
from tests.helpers.net import free_port
from tests.functions.conftest import (
    FunctionsHost,
    Organization,
    connect_account,
    count,
    full_payload,
    integration_secret,
    webhook_request,
)

MakeOrganization = Callable[[], Awaitable[Organization]]
ORG = str(uuid.uuid4())


@dataclass(frozen=True)
class Hook:
    organization: Organization
    integration_id: str
    phone: str
    key: str
    secret: str

    def url(self) -> str:
        return f"/telegram-crm-webhook?key={self.key}"

    def payload(self, **fields: object) -> dict[str, object]:
        from_id = int(fields.pop("from_id", 700_000 + int(time.time() * 1000) % 100_000))  # type: ignore[call-overload]
        return full_payload(self.organization.id, self.phone, from_id=from_id, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def hook(http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
               functions_host: FunctionsHost, make_organization: MakeOrganization) -> Hook:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization, login=False)
    key, secret = await integration_secret(db, functions_host.sealer, connected.integration_id)
    return Hook(organization, connected.integration_id, connected.phone, key, secret)


async def as_original_plan_server(db: asyncpg.Pool, hook: Hook) -> Hook:
    """Make `hook` the integration of a server of the original plan: it did not say at connect that it signs, so the
    webhook accepts its unsigned deliveries that carry the secret."""
    await db.execute("UPDATE public.messenger_integrations SET settings = jsonb_set(settings, '{signatureRequired}', "
                     "'false'::jsonb) WHERE id = $1", hook.integration_id)
    return hook


@pytest.fixture
async def legacy_hook(hook: Hook, db: asyncpg.Pool) -> Hook:
    return await as_original_plan_server(db, hook)


async def post(http: httpx.AsyncClient, hook: Hook, payload: dict[str, object], **options: object) -> httpx.Response:
    body, headers = webhook_request(hook.secret, payload, **options)  # type: ignore[arg-type]
    return await http.post(hook.url(), content=body, headers=headers)


async def test_a_signed_delivery_stores_the_message_creates_the_client_and_notifies(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    payload = hook.payload(text="Hello, I want to order", from_phone="7 999 123-45-67", message_id=501)
    response = await post(http, hook, payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["duplicate"] is False

    message = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", body["messageId"])
    assert (message["organization_id"], message["client_id"], message["integration_id"]) == \
        (hook.organization.id, body["clientId"], hook.integration_id)
    assert (message["message_text"], message["message_type"], message["is_outgoing"], message["external_message_id"]) \
        == ("Hello, I want to order", "client", False, "501")
    assert message["metadata"]["event_id"] == payload["event_id"]
    assert message["metadata"]["account_phone"] == hook.phone

    client = await db.fetchrow("SELECT * FROM public.clients WHERE id = $1", body["clientId"])
    assert (client["name"], client["phone"], client["telegram_user_id"], client["telegram_username"]) == \
        ("Ivan Petrov", "+79991234567", str(payload["from_id"]), payload["from_username"])

    notification = await db.fetchrow("SELECT * FROM public.notifications WHERE organization_id = $1",
                                     hook.organization.id)
    assert notification["type"] == "telegram_message" and "Ivan Petrov" in notification["title"]
    assert notification["body"] == "Hello, I want to order"
    assert notification["data"] == {"clientId": body["clientId"], "messageId": body["messageId"],
                                    "integrationId": hook.integration_id}


async def test_the_minimal_unsigned_payload_of_the_original_plan_is_accepted(
        http: httpx.AsyncClient, db: asyncpg.Pool, legacy_hook: Hook) -> None:
    payload = {"project_id": legacy_hook.organization.id, "account_phone": legacy_hook.phone.lstrip("+"), "from_id": 424242,
               "from_username": "minimal_user", "text": "hi from the old server"}
    response = await post(http, legacy_hook, payload, signed=False)
    assert response.status_code == 200, response.text
    client = await db.fetchrow("SELECT * FROM public.clients WHERE id = $1", response.json()["clientId"])
    assert (client["telegram_user_id"], client["telegram_username"], client["name"]) == \
        ("424242", "minimal_user", "@minimal_user")
    stored = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", response.json()["messageId"])
    assert stored["metadata"]["account_phone"] == legacy_hook.phone  # digits without + became E.164


async def test_minimal_payloads_without_message_id_are_two_messages_even_when_identical(
        http: httpx.AsyncClient, db: asyncpg.Pool, legacy_hook: Hook) -> None:
    payload = {"project_id": legacy_hook.organization.id, "account_phone": legacy_hook.phone.lstrip("+"), "from_id": 5151,
               "from_username": "twice", "text": "same text"}
    first = await post(http, legacy_hook, payload, signed=False)
    second = await post(http, legacy_hook, payload, signed=False)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["messageId"] != second.json()["messageId"]
    assert await count(db, "chat_messages", legacy_hook.organization.id) == 2


async def test_a_minimal_payload_with_message_id_is_deduplicated(
        http: httpx.AsyncClient, db: asyncpg.Pool, legacy_hook: Hook) -> None:
    payload = {"project_id": legacy_hook.organization.id, "account_phone": legacy_hook.phone.lstrip("+"), "from_id": 6161,
               "from_username": "dedupe", "text": "once", "message_id": 77}
    first = await post(http, legacy_hook, payload, signed=False)
    second = await post(http, legacy_hook, payload, signed=False)
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    assert second.json()["messageId"] == first.json()["messageId"]
    assert await count(db, "chat_messages", legacy_hook.organization.id) == 1


async def test_a_redelivered_event_is_answered_duplicate_and_stores_nothing_new(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    payload = hook.payload(message_id=9001)
    first = await post(http, hook, payload)
    again = await post(http, hook, payload)
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    assert await count(db, "chat_messages", hook.organization.id) == 1
    assert await count(db, "notifications", hook.organization.id) == 1


async def test_the_same_event_20_times_at_once_is_stored_once(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    payload = hook.payload(message_id=31337)
    body, headers = webhook_request(hook.secret, payload)
    responses = await asyncio.gather(*(http.post(hook.url(), content=body, headers=headers) for _ in range(20)))
    assert [response.status_code for response in responses] == [200] * 20
    assert sorted(response.json()["duplicate"] for response in responses) == [False] + [True] * 19
    assert len({response.json()["messageId"] for response in responses}) == 1
    assert await count(db, "chat_messages", hook.organization.id) == 1
    assert await count(db, "clients", hook.organization.id) == 1


@pytest.mark.parametrize("case", ["wrong secret", "missing secret", "bad signature", "stale timestamp",
                                  "future timestamp", "partial signature headers"])
async def test_unauthenticated_deliveries_are_401_and_store_nothing(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook, case: str) -> None:
    if case in ("wrong secret", "missing secret"):
        await as_original_plan_server(db, hook)  # the secret header is a proof only for such a server
    payload = hook.payload()
    if case == "wrong secret":
        body, headers = webhook_request("not-the-secret", payload, signed=False)
    elif case == "missing secret":
        body, headers = webhook_request(hook.secret, payload)
        del headers["x-lovable-secret"]
    elif case == "bad signature":
        body, headers = webhook_request(hook.secret, payload)
        body = body.replace(b"hello", b"HELLO")
    elif case == "stale timestamp":
        body, headers = webhook_request(hook.secret, payload, timestamp=int(time.time()) - 301)
    elif case == "future timestamp":
        body, headers = webhook_request(hook.secret, payload, timestamp=int(time.time()) + 600)
    else:
        body, headers = webhook_request(hook.secret, payload)
        del headers["webhook-signature"]
    response = await http.post(hook.url(), content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["code"] in ("INVALID_SECRET", "INVALID_SIGNATURE")
    assert await count(db, "chat_messages", hook.organization.id) == 0


async def test_our_servers_integrations_refuse_unsigned_deliveries_even_with_the_secret(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    """Anyone who once saw a delivery carrying X-Lovable-Secret could otherwise post any message, unsigned."""
    body, headers = webhook_request(hook.secret, hook.payload(), signed=False)
    response = await http.post(hook.url(), content=body, headers=headers)
    assert response.status_code == 401 and response.json()["code"] == "INVALID_SIGNATURE", response.text
    assert await count(db, "chat_messages", hook.organization.id) == 0


async def test_a_signed_delivery_needs_no_secret_header(http: httpx.AsyncClient, hook: Hook) -> None:
    body, headers = webhook_request(hook.secret, hook.payload())
    del headers["x-lovable-secret"]  # our crm_server no longer sends it
    response = await http.post(hook.url(), content=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_a_replayed_delivery_is_answered_from_memory_within_the_window(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    body, headers = webhook_request(hook.secret, hook.payload(message_id=777))
    first = await http.post(hook.url(), content=body, headers=headers)
    assert first.status_code == 200 and first.json()["duplicate"] is False
    # The stored row goes: a replay that reached the database would store it again.
    await db.execute("DELETE FROM public.chat_messages WHERE id = $1", first.json()["messageId"])
    replayed = await http.post(hook.url(), content=body, headers=headers)
    assert replayed.status_code == 200
    assert (replayed.json()["messageId"], replayed.json()["duplicate"]) == (first.json()["messageId"], True)
    assert await count(db, "chat_messages", hook.organization.id) == 0


async def test_an_unknown_or_missing_key_is_404(http: httpx.AsyncClient, hook: Hook) -> None:
    body, headers = webhook_request(hook.secret, hook.payload())
    for url in ("/telegram-crm-webhook?key=nope", "/telegram-crm-webhook"):
        response = await http.post(url, content=body, headers=headers)
        assert response.status_code == 404
        assert response.json()["code"] == "INTEGRATION_NOT_FOUND"


async def test_a_key_with_a_nul_byte_is_404_not_a_database_error(http: httpx.AsyncClient, hook: Hook) -> None:
    # Found by the reliability fuzzer: PostgreSQL refused the NUL in the lookup, answered as a retryable 503.
    body, headers = webhook_request(hook.secret, hook.payload())
    response = await http.post("/telegram-crm-webhook", params={"key": hook.key + "\x00"}, content=body,
                               headers=headers)
    assert response.status_code == 404 and response.json()["code"] == "INTEGRATION_NOT_FOUND"


async def test_nul_characters_in_a_message_are_dropped_and_the_message_stored(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    # Found by the reliability fuzzer: PostgreSQL text cannot hold U+0000; the webhook answered 503 for ever.
    response = await post(http, hook, hook.payload(text="nul\x00 inside", from_first_name="A\x00na"))
    assert response.status_code == 200, response.text
    row = await db.fetchrow("SELECT message_text, sender_name FROM public.chat_messages WHERE id = $1",
                            response.json()["messageId"])
    assert (row["message_text"], row["sender_name"]) == ("nul inside", "Ana Petrov")


async def test_a_disabled_integration_is_404(http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    await db.execute("UPDATE public.messenger_integrations SET is_enabled = false WHERE id = $1", hook.integration_id)
    response = await post(http, hook, hook.payload())
    assert response.status_code == 404
    assert await count(db, "chat_messages", hook.organization.id) == 0


async def test_an_integration_disabled_right_after_a_delivery_is_404_at_once(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    # The first delivery leaves the integration in the host's short-lived cache; the database still refuses.
    assert (await post(http, hook, hook.payload())).status_code == 200
    await db.execute("UPDATE public.messenger_integrations SET is_enabled = false WHERE id = $1", hook.integration_id)
    response = await post(http, hook, hook.payload())
    assert response.status_code == 404 and response.json()["code"] == "INTEGRATION_NOT_FOUND"
    assert await count(db, "chat_messages", hook.organization.id) == 1
    assert await count(db, "notifications", hook.organization.id) == 1


async def test_a_deleted_integrations_key_is_unknown_once_the_cache_ttl_passed(
        db: asyncpg.Pool, hook: Hook, functions_host: FunctionsHost) -> None:
    settings = functions_host.settings.model_copy(update={"webhook_key_cache_seconds": 0.2})
    runtime = await FunctionsRuntime.start(settings)
    try:
        assert await runtime.integrations.find_by_webhook_key(hook.key) is not None
        await db.execute("DELETE FROM public.messenger_integrations WHERE id = $1", hook.integration_id)
        # Within the TTL the remembered row answers (the store itself is refused by the database then) ...
        assert await runtime.integrations.find_by_webhook_key(hook.key) is not None
        await asyncio.sleep(0.25)
        # ... after it, the key is unknown.
        assert await runtime.integrations.find_by_webhook_key(hook.key) is None
    finally:
        await runtime.aclose()


async def test_a_project_id_of_another_organization_is_refused(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook, make_organization: MakeOrganization) -> None:
    other = await make_organization()
    payload = {**hook.payload(), "project_id": other.id}
    response = await post(http, hook, payload)
    assert response.status_code == 403
    assert response.json()["field"] == "project_id"
    assert await count(db, "chat_messages", hook.organization.id) == 0
    assert await count(db, "chat_messages", other.id) == 0


@pytest.mark.parametrize(("change", "field"), [
    ({"from_id": "not-a-number"}, "from_id"),
    ({"account_phone": "phone"}, "account_phone"),
    ({"text": None, "file_url": None}, "text"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"project_id": "x"}, "project_id"),
])
async def test_a_malformed_field_is_422_naming_it(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook, change: dict[str, object], field: str) -> None:
    response = await post(http, hook, {**hook.payload(), **change})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert await count(db, "chat_messages", hook.organization.id) == 0


def test_minimal_payload_of_the_original_plan_is_accepted() -> None:
    payload = validate_model(WebhookPayload, {"project_id": ORG, "account_phone": "79990000001", "from_id": 42,
                                              "from_username": "ivan", "text": "hi"})
    assert (payload.account_phone, payload.from_id, payload.message_id) == ("+79990000001", "42", None)
    assert payload.sender_display_name == "@ivan"


def test_full_payload_normalises_ids_and_phones() -> None:
    payload = validate_model(WebhookPayload, {
        "event_id": "evt", "project_id": ORG, "account_phone": "+79990000001", "from_id": "42",
        "from_username": "@ivan", "from_first_name": "Ivan", "from_phone": "7 999 123 45 67", "chat_id": 42,
        "message_id": 7, "text": "hi", "timestamp": "2026-01-02T03:04:05Z", "unknown_field": [1]})
    assert (payload.from_username, payload.from_phone, payload.chat_id, payload.message_id) == \
        ("ivan", "+79991234567", "42", "7")
    assert payload.timestamp is not None and payload.timestamp.tzinfo is not None


@pytest.mark.parametrize(("fields", "field"), [
    ({"project_id": "nope"}, "project_id"),
    ({"from_id": "abc"}, "from_id"),
    ({"from_id": True}, "from_id"),
    ({"account_phone": "x"}, "account_phone"),
    ({"text": None}, "text"),
    ({"text": 5}, "text"),
    ({"timestamp": "yesterday"}, "timestamp"),
])
def test_malformed_webhook_fields_are_named(fields: dict[str, object], field: str) -> None:
    body = {"project_id": ORG, "account_phone": "79990000001", "from_id": 1, "text": "hi", **fields}
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(WebhookPayload, body)
    assert caught.value.field == field


async def test_a_failing_notification_never_loses_the_message(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    await db.execute(f"""
        CREATE FUNCTION public.test_refuse_notification_{_suffix(hook)}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.organization_id = '{hook.organization.id}' THEN RAISE EXCEPTION 'notifications are down'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_refuse_notification_{_suffix(hook)} BEFORE INSERT ON public.notifications
            FOR EACH ROW EXECUTE FUNCTION public.test_refuse_notification_{_suffix(hook)}();""")
    try:
        response = await post(http, hook, hook.payload(message_id=4040))
    finally:
        await _drop_trigger(db, "notifications", f"test_refuse_notification_{_suffix(hook)}")
    assert response.status_code == 200, response.text
    assert await count(db, "chat_messages", hook.organization.id) == 1
    assert await count(db, "notifications", hook.organization.id) == 0


async def test_a_database_failure_is_5xx_so_the_server_retries(
        http: httpx.AsyncClient, db: asyncpg.Pool, hook: Hook) -> None:
    await db.execute(f"""
        CREATE FUNCTION public.test_refuse_message_{_suffix(hook)}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.organization_id = '{hook.organization.id}' THEN RAISE EXCEPTION 'disk full'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_refuse_message_{_suffix(hook)} BEFORE INSERT ON public.chat_messages
            FOR EACH ROW EXECUTE FUNCTION public.test_refuse_message_{_suffix(hook)}();""")
    payload = hook.payload(message_id=5050)
    try:
        failed = await post(http, hook, payload)
    finally:
        await _drop_trigger(db, "chat_messages", f"test_refuse_message_{_suffix(hook)}")
    assert failed.status_code >= 500, failed.text
    assert failed.json()["code"] == "DATABASE_ERROR"
    # The retry the server makes then succeeds.
    retried = await post(http, hook, payload)
    assert retried.status_code == 200 and retried.json()["duplicate"] is False


# Anything a sender might get wrong: never a 5xx (that would make crm_server retry a hopeless delivery for a day).
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars,
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=6)
FIELDS = ["event_id", "project_id", "account_phone", "from_id", "from_username", "from_first_name", "from_phone",
          "chat_id", "message_id", "text", "timestamp", "file_url"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_payloads_are_refused_with_a_4xx_never_a_5xx(data: st.DataObject, functions_host: FunctionsHost,
                                                              malformed_hook: Hook) -> None:
    base = malformed_hook.payload()
    kind = data.draw(st.sampled_from(["replace", "drop", "raw"]))
    if kind == "raw":
        body = data.draw(st.binary(max_size=200) | json_values.map(lambda value: _dumps(value).encode()))
    else:
        field = data.draw(st.sampled_from(FIELDS))
        payload = dict(base)
        if kind == "replace":
            payload[field] = data.draw(json_values)
        else:
            payload.pop(field, None)
        body = _dumps(payload).encode()
    # Signed, as crm_server sends it: what is under test is the payload's parsing.
    event_id, sent_at = str(uuid.uuid4()), int(time.time())
    headers = {"content-type": "application/json", "webhook-id": event_id, "webhook-timestamp": str(sent_at),
               "webhook-signature": sign(malformed_hook.secret, event_id, sent_at, body)}
    response = httpx.post(f"{functions_host.url}{malformed_hook.url()}", content=body, headers=headers, timeout=30)
    assert response.status_code < 500, response.text
    answer = response.json()
    if response.status_code == 200:
        assert answer["success"] is True and uuid.UUID(answer["messageId"])
    else:
        assert response.status_code in (400, 403, 422), response.text
        assert answer["success"] is False and answer["code"] and answer["error"]


@pytest.fixture(scope="module")
def malformed_hook(crm: CrmServerProcess, local_keys: object, functions_host: FunctionsHost,
                   database_urls: object) -> Hook:
    """One integration for the hypothesis run, set up synchronously (hypothesis drives a plain function)."""
    async def arrange() -> Hook:
        connection = await asyncpg.connect(database_urls.admin)  # type: ignore[attr-defined]
        try:
            organization_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
            await connection.execute("INSERT INTO public.organizations (id, name) VALUES ($1, 'fuzz')", organization_id)
            await connection.execute("INSERT INTO auth.users (id) VALUES ($1)", user_id)
            await connection.execute("INSERT INTO public.profiles (id, organization_id) VALUES ($1, $2)", user_id,
                                     organization_id)
            organization = Organization(organization_id, user_id,
                                        user_token(user_id, local_keys.jwt_secret))  # type: ignore[attr-defined]
            phone = new_phone()
            response = httpx.post(f"{functions_host.url}/telegram-crm-connect", headers=organization.auth, timeout=30,
                                  json={"crmApiUrl": crm.url, "crmApiKey": crm.admin_key, "crmPhoneNumber": phone})
            assert response.status_code == 200, response.text
            integration_id = response.json()["integrationId"]
            row = await connection.fetchrow(
                "SELECT webhook_key, settings::text FROM public.messenger_integrations WHERE id = $1", integration_id)
            return Hook(organization, integration_id, phone, row["webhook_key"],
                        functions_host.sealer.open(json.loads(row["settings"]))["secret"])
        finally:
            await connection.close()

    return asyncio.run(arrange())


def _dumps(value: object) -> str:
    return json.dumps(value)


def _suffix(hook: Hook) -> str:
    return hook.integration_id.replace("-", "")[:12]


async def _drop_trigger(db: asyncpg.Pool, table: str, name: str) -> None:
    await db.execute(f"DROP TRIGGER IF EXISTS {name} ON public.{table}; DROP FUNCTION IF EXISTS public.{name}();")


async def test_a_cold_burst_for_one_key_looks_the_integration_up_once(
        db: asyncpg.Pool, hook: Hook, functions_host: FunctionsHost) -> None:
    # The functions app in-process (the database stays behind the real REST gateway), so the test can count the
    # lookups by key on the runtime's own REST client: an httpx event hook sees every request it sends.
    app = create_functions_app(functions_host.settings)
    holder = app.state.runtime_holder
    runtime = await holder.get()
    lookups: list[httpx.URL] = []

    async def count_lookups(request: httpx.Request) -> None:
        if request.url.path.endswith("/messenger_integrations") and "webhook_key" in request.url.params:
            lookups.append(request.url)

    runtime.rest_http.event_hooks = {"request": [count_lookups], "response": []}
    burst = 12
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://functions",
                                     timeout=60.0) as client:
            answers = await asyncio.gather(*(post(client, hook, hook.payload(message_id=9_100 + index))
                                             for index in range(burst)))
    finally:
        await holder.close()
    assert [answer.status_code for answer in answers] == [200] * burst, [answer.text for answer in answers]
    assert len(lookups) == 1
    assert await count(db, "chat_messages", hook.organization.id) == burst


async def test_a_failed_lookup_fails_every_waiter_of_the_burst_and_is_not_remembered(
        functions_host: FunctionsHost) -> None:
    # A REST gateway nobody listens on: the lookup fails at the transport, for real.
    settings = functions_host.settings.model_copy(update={"supabase_url": f"http://127.0.0.1:{free_port()}"})
    runtime = await FunctionsRuntime.start(settings)
    attempts: list[httpx.URL] = []

    async def count_lookups(request: httpx.Request) -> None:
        if "webhook_key" in request.url.params:
            attempts.append(request.url)

    runtime.rest_http.event_hooks = {"request": [count_lookups], "response": []}
    try:
        # What one lookup costs at the transport (supabase-py retries a failed read a few times itself).
        with pytest.raises(DatabaseError):
            await runtime.integrations.find_by_webhook_key("k" * 32)
        one_lookup = len(attempts)
        assert one_lookup >= 1
        burst = await asyncio.gather(*(runtime.integrations.find_by_webhook_key("k" * 32) for _ in range(8)),
                                     return_exceptions=True)
        assert all(isinstance(outcome, DatabaseError) for outcome in burst), burst
        assert len(attempts) == 2 * one_lookup  # the burst cost one lookup
        # The failure is not remembered: the next request looks again.
        with pytest.raises(DatabaseError):
            await runtime.integrations.find_by_webhook_key("k" * 32)
        assert len(attempts) == 3 * one_lookup
    finally:
        await runtime.aclose()
