"""Nothing in a request becomes SQL: hostile values, names, order and on_conflict are refused (400) or inert."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgrest.exceptions import APIError
from supabase import AsyncClient

from supabase_local.database import DatabaseUrls
from tests.conftest import DEMO_ORGANIZATION_ID, StatusRecorder

DROP = "; DROP TABLE public.clients; --"


@pytest.fixture(scope="module")
async def organization_id(database_urls: DatabaseUrls) -> str:
    value = str(uuid.uuid4())
    conn = await asyncpg.connect(database_urls.admin)
    try:
        await conn.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Injection tests')", value)
    finally:
        await conn.close()
    return value


async def fingerprint(database_urls: DatabaseUrls) -> tuple[int, str]:
    """Row count and a digest of the demo organization's clients: equal before and after means untouched."""
    conn = await asyncpg.connect(database_urls.admin)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, md5(coalesce(string_agg(c::text, '|' ORDER BY id), '')) AS digest"
            " FROM clients c WHERE organization_id = $1", DEMO_ORGANIZATION_ID)
    finally:
        await conn.close()
    return row["n"], row["digest"]


@pytest.mark.parametrize(
    "value",
    [
        "x' OR '1'='1",
        f"x'{DROP}",
        "x\\'; SELECT pg_sleep(5); --",
        "$1",
        "x) OR (1=1",
        '"quoted", with, commas',
        "%",
    ],
)
async def test_hostile_filter_values_match_nothing_and_change_nothing(
        service_client: AsyncClient, database_urls: DatabaseUrls, value: str) -> None:
    before = await fingerprint(database_urls)
    eq = await service_client.table("clients").select("id").eq("organization_id", DEMO_ORGANIZATION_ID) \
        .eq("name", value).execute()
    in_list = await service_client.table("clients").select("id").eq("organization_id", DEMO_ORGANIZATION_ID) \
        .in_("name", [value, "nobody"]).execute()
    assert (eq.data, in_list.data) == ([], [])
    assert await fingerprint(database_urls) == before


@pytest.mark.parametrize(
    ("build", "status"),
    [
        (lambda t: t.select(f"name{DROP}"), 400),
        (lambda t: t.select('"name"" FROM clients; DROP TABLE clients; --"'), 400),
        (lambda t: t.select("name::text; DROP TABLE clients"), 400),
        (lambda t: t.select("settings->>'a'; DROP TABLE clients"), 400),
        (lambda t: t.select("id").eq(f"name) OR 1=1{DROP}", "x"), 400),
        (lambda t: t.select("id").eq("name->>a'||pg_sleep(1)||'", "x"), 400),
        (lambda t: t.select("id").order(f"name{DROP}"), 400),
        (lambda t: t.select("id").order("name.desc,(SELECT 1)"), 400),
        (lambda t: t.select("id").filter("name", f"eq{DROP}", "x"), 400),
        (lambda t: t.select("id").or_(f"name.eq.x){DROP}"), 400),
        (lambda t: t.select("id").limit(f"1{DROP}"), 400),
        (lambda t: t.upsert({"name": "x", "organization_id": DEMO_ORGANIZATION_ID},
                            on_conflict=f"id){DROP}"), 400),
        (lambda t: t.upsert({"name": "x", "organization_id": DEMO_ORGANIZATION_ID},
                            on_conflict='"id""); DROP TABLE clients; --"'), 400),
        (lambda t: t.insert({f"name\"){DROP}": "x"}), 400),
    ],
    ids=["select", "select-quoted", "cast", "json-key", "filter-column", "filter-json-key", "order",
         "order-subquery", "operator", "or-tree", "limit", "on-conflict", "on-conflict-quoted", "body-key"],
)
async def test_hostile_names_are_refused(service_client: AsyncClient, database_urls: DatabaseUrls,
                                         record_statuses: StatusRecorder, build, status: int) -> None:
    before = await fingerprint(database_urls)
    async with record_statuses(service_client) as statuses:
        with pytest.raises(APIError):
            await build(service_client.table("clients")).execute()
    assert statuses == [status]
    assert await fingerprint(database_urls) == before


async def test_hostile_rpc_argument_names_find_no_function(service_client: AsyncClient) -> None:
    with pytest.raises(APIError) as raised:
        await service_client.rpc("ingest_telegram_message", {f"p_organization_id){DROP}": "x"}).execute()
    assert raised.value.code == "PGRST202"


async def test_hostile_table_and_function_names_are_not_found(service_client: AsyncClient) -> None:
    with pytest.raises(APIError) as table:
        await service_client.table(f"clients{DROP}").select("id").execute()
    with pytest.raises(APIError) as function:
        await service_client.rpc(f"now(){DROP}", {}).execute()
    assert (table.value.code, function.value.code) == ("42P01", "PGRST202")


# Any text PostgreSQL can store (no NUL), including quotes, commas, parentheses, dots and backslashes.
filter_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=filter_text)
async def test_any_filter_value_round_trips_as_data(service_client: AsyncClient, organization_id: str,
                                                    value: str) -> None:
    """Whatever the text, eq/in/neq find exactly the row that holds it: values are bound, never parsed as SQL."""
    tag = uuid.uuid4().hex
    inserted = await service_client.table("clients").insert(
        {"organization_id": organization_id, "name": value, "telegram_user_id": tag}).execute()
    client_id = inserted.data[0]["id"]
    by_tag = service_client.table("clients").select("id,name")
    eq = await by_tag.eq("telegram_user_id", tag).eq("name", value).execute()
    in_list = await service_client.table("clients").select("id").eq("telegram_user_id", tag) \
        .in_("name", [value, value + "x"]).execute()
    neq = await service_client.table("clients").select("id").eq("telegram_user_id", tag).neq("name", value) \
        .execute()
    assert eq.data == [{"id": client_id, "name": value}]
    assert in_list.data == [{"id": client_id}]
    assert neq.data == []
