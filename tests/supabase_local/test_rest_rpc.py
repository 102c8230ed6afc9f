"""`.rpc()` through the REST gateway: named arguments, every return shape, filters on set results, concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient

from supabase_local.database import DatabaseUrls
from tests.conftest import DEMO_ORGANIZATION_ID, DEMO_USER_ID, StatusRecorder, UserClientFactory

# Functions of every return shape PostgREST distinguishes; security invoker, so RLS applies to what they read.
TEST_FUNCTIONS = """
CREATE OR REPLACE FUNCTION public.rest_test_add(a integer, b integer DEFAULT 1) RETURNS integer
    LANGUAGE sql IMMUTABLE AS $$ SELECT a + b $$;
CREATE OR REPLACE FUNCTION public.rest_test_void(p text) RETURNS void
    LANGUAGE plpgsql AS $$ BEGIN PERFORM p; END $$;
CREATE OR REPLACE FUNCTION public.rest_test_numbers(n integer) RETURNS SETOF integer
    LANGUAGE sql IMMUTABLE AS $$ SELECT generate_series(1, n) $$;
CREATE OR REPLACE FUNCTION public.rest_test_clients(p_organization_id uuid) RETURNS SETOF public.clients
    LANGUAGE sql STABLE AS $$ SELECT * FROM public.clients WHERE organization_id = p_organization_id $$;
CREATE OR REPLACE FUNCTION public.rest_test_pair(x text, OUT upper_x text, OUT length_x integer)
    LANGUAGE sql IMMUTABLE AS $$ SELECT upper(x), length(x) $$;
CREATE OR REPLACE FUNCTION public.rest_test_count_tags(p_tags text[], p_meta jsonb DEFAULT '{}') RETURNS integer
    LANGUAGE sql IMMUTABLE AS $$ SELECT cardinality(p_tags) + coalesce((p_meta->>'extra')::int, 0) $$;
CREATE OR REPLACE FUNCTION public.rest_test_payment_required() RETURNS integer
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'pay first' USING ERRCODE = 'PT402'; END $$;
NOTIFY pgrst, 'reload schema';
"""


DROP_TEST_FUNCTIONS = """
DROP FUNCTION public.rest_test_add, public.rest_test_void, public.rest_test_numbers, public.rest_test_clients,
    public.rest_test_pair, public.rest_test_count_tags, public.rest_test_payment_required;
"""


@pytest.fixture(scope="module")
async def test_functions(database_urls: DatabaseUrls, service_client: AsyncClient) -> AsyncIterator[None]:
    """Created once the gateway runs (hence service_client), so they reach it through a schema cache reload."""
    conn = await asyncpg.connect(database_urls.admin)
    try:
        await conn.execute(TEST_FUNCTIONS)
        yield
        await conn.execute(DROP_TEST_FUNCTIONS)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def integration_id(database_urls: DatabaseUrls) -> str:
    conn = await asyncpg.connect(database_urls.admin)
    try:
        value = await conn.fetchval(
            "INSERT INTO messenger_integrations (organization_id, provider, webhook_key)"
            " VALUES ($1, 'telegram_crm', $2) RETURNING id::text", DEMO_ORGANIZATION_ID, f"rpc-{uuid.uuid4()}")
    finally:
        await conn.close()
    return value


def ingest_arguments(integration_id: str, external_id: str, telegram_user_id: str) -> dict[str, object]:
    return {
        "p_organization_id": DEMO_ORGANIZATION_ID,
        "p_integration_id": integration_id,
        "p_telegram_user_id": telegram_user_id,
        "p_message_text": "Hello",
        "p_external_message_id": external_id,
        "p_first_name": "Rpc",
        "p_metadata": {"source": "test"},
    }


async def test_ingest_stores_a_message_and_reports_redelivery(service_client: AsyncClient,
                                                              integration_id: str) -> None:
    arguments = ingest_arguments(integration_id, f"ext-{uuid.uuid4()}", f"tg-{uuid.uuid4()}")
    first = await service_client.rpc("ingest_telegram_message", arguments).execute()
    again = await service_client.rpc("ingest_telegram_message", arguments).execute()
    assert first.data["duplicate"] is False
    assert again.data == {**first.data, "duplicate": True}
    stored = await service_client.table("chat_messages").select("message_text,metadata,client_id") \
        .eq("id", first.data["message_id"]).single().execute()
    assert stored.data == {"message_text": "Hello", "metadata": {"source": "test"},
                           "client_id": first.data["client_id"]}


async def test_twenty_concurrent_deliveries_store_one_message(service_client: AsyncClient,
                                                              integration_id: str) -> None:
    external_id = f"ext-{uuid.uuid4()}"
    arguments = ingest_arguments(integration_id, external_id, f"tg-{uuid.uuid4()}")
    results = await asyncio.gather(*(service_client.rpc("ingest_telegram_message", arguments).execute()
                                     for _ in range(20)))
    stored = await service_client.table("chat_messages").select("id", count="exact") \
        .eq("integration_id", integration_id).eq("external_message_id", external_id).execute()
    assert sorted(result.data["duplicate"] for result in results) == [False] + [True] * 19
    assert len({result.data["message_id"] for result in results}) == 1
    assert stored.count == 1


def webhook_arguments(integration_id: str, external_id: str, telegram_user_id: str) -> dict[str, object]:
    return {**ingest_arguments(integration_id, external_id, telegram_user_id),
            "p_notification_title": "New Telegram message from Rpc", "p_notification_body": "Hello"}


async def notifications_about(service_client: AsyncClient, message_id: str) -> list[dict[str, object]]:
    found = await service_client.table("notifications").select("type,title,body,data") \
        .eq("organization_id", DEMO_ORGANIZATION_ID).eq("data->>messageId", message_id).execute()
    return list(found.data)


async def test_ingest_webhook_notifies_a_new_message_once(service_client: AsyncClient, integration_id: str) -> None:
    arguments = webhook_arguments(integration_id, f"ext-{uuid.uuid4()}", f"tg-{uuid.uuid4()}")
    first = await service_client.rpc("ingest_telegram_webhook", arguments).execute()
    assert first.data["duplicate"] is False
    assert await notifications_about(service_client, first.data["message_id"]) == [{
        "type": "telegram_message", "title": "New Telegram message from Rpc", "body": "Hello",
        "data": {"clientId": first.data["client_id"], "messageId": first.data["message_id"],
                 "integrationId": integration_id}}]


async def test_ingest_webhook_redelivery_stores_and_notifies_nothing_new(service_client: AsyncClient,
                                                                        integration_id: str) -> None:
    arguments = webhook_arguments(integration_id, f"ext-{uuid.uuid4()}", f"tg-{uuid.uuid4()}")
    results = await asyncio.gather(*(service_client.rpc("ingest_telegram_webhook", arguments).execute()
                                     for _ in range(5)))
    again = await service_client.rpc("ingest_telegram_webhook", arguments).execute()
    assert sorted(result.data["duplicate"] for result in results) == [False] + [True] * 4
    assert again.data["duplicate"] is True
    assert len(await notifications_about(service_client, again.data["message_id"])) == 1


async def test_ingest_webhook_refuses_a_disabled_integration_with_404(
        service_client: AsyncClient, database_urls: DatabaseUrls, record_statuses: StatusRecorder) -> None:
    conn = await asyncpg.connect(database_urls.admin)
    try:
        disabled_id = await conn.fetchval(
            "INSERT INTO messenger_integrations (organization_id, provider, webhook_key, is_enabled)"
            " VALUES ($1, 'telegram_crm', $2, false) RETURNING id::text", DEMO_ORGANIZATION_ID, f"rpc-{uuid.uuid4()}")
        external_id = f"ext-{uuid.uuid4()}"
        async with record_statuses(service_client) as statuses:
            with pytest.raises(APIError) as raised:
                await service_client.rpc("ingest_telegram_webhook",
                                         webhook_arguments(disabled_id, external_id, f"tg-{uuid.uuid4()}")).execute()
        stored = await conn.fetchval("SELECT count(*) FROM chat_messages WHERE external_message_id = $1",
                                     external_id)
    finally:
        await conn.close()
    assert (raised.value.code, statuses, stored) == ("PT404", [404], 0)


async def test_ingest_webhook_refuses_an_integration_of_another_organization(
        service_client: AsyncClient, integration_id: str) -> None:
    arguments = {**webhook_arguments(integration_id, f"ext-{uuid.uuid4()}", f"tg-{uuid.uuid4()}"),
                 "p_organization_id": str(uuid.uuid4())}
    with pytest.raises(APIError) as raised:
        await service_client.rpc("ingest_telegram_webhook", arguments).execute()
    assert raised.value.code == "PT404"


async def test_function_error_keeps_its_sqlstate(service_client: AsyncClient,
                                                 record_statuses: StatusRecorder) -> None:
    arguments = {"p_organization_id": None, "p_integration_id": None, "p_telegram_user_id": "1",
                 "p_message_text": "x"}
    async with record_statuses(service_client) as statuses:
        with pytest.raises(APIError) as raised:
            await service_client.rpc("ingest_telegram_message", arguments).execute()
    assert (raised.value.code, statuses) == ("22023", [400])


async def test_argument_of_the_wrong_type_is_22p02(service_client: AsyncClient) -> None:
    with pytest.raises(APIError) as raised:
        await service_client.rpc("ingest_telegram_message", {
            "p_organization_id": "not-a-uuid", "p_integration_id": None, "p_telegram_user_id": "1",
            "p_message_text": "x"}).execute()
    assert raised.value.code == "22P02"


@pytest.mark.parametrize("arguments", [{"a": 1, "nope": 2}, {"b": 2}])
async def test_unknown_or_missing_arguments_find_no_function(service_client: AsyncClient, test_functions: None,
                                                             arguments: dict[str, int]) -> None:
    with pytest.raises(APIError) as raised:
        await service_client.rpc("rest_test_add", arguments).execute()
    assert raised.value.code == "PGRST202"


async def test_scalar_result_with_a_default_argument(service_client: AsyncClient, test_functions: None) -> None:
    assert (await service_client.rpc("rest_test_add", {"a": 41}).execute()).data == 42
    assert (await service_client.rpc("rest_test_add", {"a": 1, "b": 2}).execute()).data == 3


async def test_rpc_called_with_get(service_client: AsyncClient, test_functions: None) -> None:
    result = await service_client.rpc("rest_test_add", {"a": 2, "b": 5}, get=True).execute()
    assert result.data == 7


async def test_array_and_jsonb_arguments(service_client: AsyncClient, test_functions: None) -> None:
    result = await service_client.rpc("rest_test_count_tags",
                                      {"p_tags": ["a", "b,c", "d"], "p_meta": {"extra": 10}}).execute()
    assert result.data == 13


async def test_void_function_answers_no_content(service_client: AsyncClient, test_functions: None,
                                                record_statuses: StatusRecorder) -> None:
    async with record_statuses(service_client) as statuses:
        result = await service_client.rpc("rest_test_void", {"p": "x"}).execute()
    assert statuses == [204]
    assert result.data == []


async def test_setof_scalar_is_an_array_with_paging(service_client: AsyncClient, test_functions: None) -> None:
    everything = await service_client.rpc("rest_test_numbers", {"n": 5}).execute()
    page = await service_client.rpc("rest_test_numbers", {"n": 5}).limit(2).execute()
    assert everything.data == [1, 2, 3, 4, 5]
    assert page.data == [1, 2]


async def test_composite_result_is_one_object(service_client: AsyncClient, test_functions: None) -> None:
    result = await service_client.rpc("rest_test_pair", {"x": "abc"}).execute()
    assert result.data == {"upper_x": "ABC", "length_x": 3}


async def test_setof_rows_take_select_filters_order_and_count(service_client: AsyncClient,
                                                              test_functions: None) -> None:
    result = await service_client.rpc("rest_test_clients", {"p_organization_id": DEMO_ORGANIZATION_ID},
                                      count="exact").select("name").in_("name", ["Ivan Petrov", "Maria Smirnova"]) \
        .order("name", desc=True).limit(1).execute()
    assert result.data == [{"name": "Maria Smirnova"}]
    assert result.count == 2


async def test_setof_rows_single(service_client: AsyncClient, test_functions: None) -> None:
    result = await service_client.rpc("rest_test_clients", {"p_organization_id": DEMO_ORGANIZATION_ID}) \
        .select("name").eq("name", "Ivan Petrov").single().execute()
    assert result.data == {"name": "Ivan Petrov"}


async def test_function_reads_under_the_callers_rls(user_client: UserClientFactory, test_functions: None,
                                                    other_organization) -> None:
    client = await user_client(DEMO_USER_ID)
    result = await client.rpc("rest_test_clients", {"p_organization_id": other_organization.organization_id}) \
        .execute()
    assert result.data == []


async def test_pt_sqlstate_chooses_the_http_status(service_client: AsyncClient, test_functions: None,
                                                   record_statuses: StatusRecorder) -> None:
    async with record_statuses(service_client) as statuses:
        with pytest.raises(APIError) as raised:
            await service_client.rpc("rest_test_payment_required", {}).execute()
    assert (raised.value.code, raised.value.message, statuses) == ("PT402", "pay first", [402])
