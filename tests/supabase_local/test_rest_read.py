"""Reads through the REST gateway with supabase-py: select lists, JSON paths, every filter, order, paging, counts."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import asyncpg
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient

from supabase_local.database import DatabaseUrls


@dataclass(frozen=True)
class Fixture:
    organization_id: str
    integration_id: str
    # name -> (phone, telegram_username, is_active, telegram_user_id)
    clients: dict[str, tuple[str | None, str | None, bool, str | None]]


CLIENTS = {
    "Anna": ("+7001", "anna_k", True, "101"),
    "Boris": ("+7002", None, True, "102"),
    "Clara": (None, "clara", False, "103"),
    "Dmitry": ("+7004", "Dima", True, "104"),
    "elena": ("+7005", None, False, None),
}


@pytest.fixture(scope="module")
async def org(database_urls: DatabaseUrls) -> Fixture:
    """One organization of our own with five clients and an integration, so counts are exact."""
    organization_id = str(uuid.uuid4())
    integration_id = str(uuid.uuid4())
    conn = await asyncpg.connect(database_urls.admin)
    try:
        await conn.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Read tests')", organization_id)
        for index, (name, (phone, username, active, telegram_id)) in enumerate(CLIENTS.items()):
            await conn.execute(
                "INSERT INTO clients (organization_id, name, phone, telegram_username, is_active, telegram_user_id,"
                " last_message_at) VALUES ($1, $2, $3, $4, $5, $6,"
                " CASE WHEN $7::int % 2 = 0 THEN now() - make_interval(mins => $7::int) END)",
                organization_id, name, phone, username, active, telegram_id, index,
            )
        await conn.execute(
            "INSERT INTO messenger_integrations (id, organization_id, provider, name, webhook_key, settings)"
            " VALUES ($1, $2, 'telegram_crm', 'main', $3, $4::jsonb)",
            integration_id, organization_id, f"key-{integration_id}",
            json.dumps({"mode": "live", "limits": {"per_minute": 20}, "phones": ["+7001", "+7002"]}),
        )
    finally:
        await conn.close()
    return Fixture(organization_id, integration_id, CLIENTS)


def names(rows: list[dict]) -> list[str]:
    return sorted(row["name"] for row in rows)


async def test_select_returns_only_the_listed_columns(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("id, name").eq("organization_id", org.organization_id) \
        .execute()
    assert len(result.data) == 5
    assert all(set(row) == {"id", "name"} for row in result.data)


async def test_select_alias_and_cast(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("who:name,active:is_active::text") \
        .eq("organization_id", org.organization_id).eq("name", "Anna").execute()
    assert result.data == [{"who": "Anna", "active": "true"}]


async def test_select_json_paths_as_text_and_json(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("messenger_integrations") \
        .select("settings->>mode, settings->limits->per_minute, first_phone:settings->phones->>0") \
        .eq("id", org.integration_id).execute()
    assert result.data == [{"mode": "live", "per_minute": 20, "first_phone": "+7001"}]


async def test_filter_on_json_path(service_client: AsyncClient, org: Fixture) -> None:
    table = service_client.table("messenger_integrations")
    hit = await table.select("id").eq("organization_id", org.organization_id).eq("settings->>mode", "live").execute()
    miss = await service_client.table("messenger_integrations").select("id") \
        .eq("organization_id", org.organization_id).eq("settings->>mode", "test").execute()
    assert hit.data == [{"id": org.integration_id}]
    assert miss.data == []


async def test_contains_filter_on_jsonb(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("messenger_integrations").select("id") \
        .eq("organization_id", org.organization_id).contains("settings", {"mode": "live"}).execute()
    assert result.data == [{"id": org.integration_id}]


@pytest.mark.parametrize(
    ("operator", "column", "value", "expected"),
    [
        ("eq", "name", "Boris", ["Boris"]),
        ("neq", "name", "Boris", ["Anna", "Clara", "Dmitry", "elena"]),
        ("gt", "telegram_user_id", "102", ["Clara", "Dmitry"]),
        ("gte", "telegram_user_id", "102", ["Boris", "Clara", "Dmitry"]),
        ("lt", "telegram_user_id", "102", ["Anna"]),
        ("lte", "telegram_user_id", "102", ["Anna", "Boris"]),
        ("like", "name", "%a", ["Anna", "Clara", "elena"]),
        ("ilike", "name", "e%", ["elena"]),
        ("eq", "is_active", False, ["Clara", "elena"]),
    ],
)
async def test_comparison_filters_and_their_negation(service_client: AsyncClient, org: Fixture, operator: str,
                                                     column: str, value: object, expected: list[str]) -> None:
    def base():
        return service_client.table("clients").select("name").eq("organization_id", org.organization_id)

    matching = await getattr(base(), operator)(column, value).execute()
    negated = await getattr(base().not_, operator)(column, value).execute()
    assert names(matching.data) == expected
    # NOT (col op value) is unknown for NULLs, so rows with a NULL column are in neither set.
    nulls = {name for name, (_, _, _, telegram_id) in CLIENTS.items() if column == "telegram_user_id"
             and telegram_id is None}
    assert names(negated.data) == sorted(set(CLIENTS) - set(expected) - nulls)


async def test_like_accepts_star_as_wildcard(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .like("name", "*or*").execute()
    assert names(result.data) == ["Boris"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ["Clara"]), ("not_null", ["Anna", "Boris", "Dmitry", "elena"])],
)
async def test_is_null_filter(service_client: AsyncClient, org: Fixture, value: object, expected: list[str]) -> None:
    result = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .is_("phone", value).execute()
    assert names(result.data) == expected


async def test_is_boolean_and_not_is(service_client: AsyncClient, org: Fixture) -> None:
    inactive = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .is_("is_active", False).execute()
    with_phone = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .not_.is_("phone", None).execute()
    assert names(inactive.data) == ["Clara", "elena"]
    assert names(with_phone.data) == ["Anna", "Boris", "Dmitry", "elena"]


async def test_in_filter_with_quoted_values_and_negation(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .in_("name", ["Anna", "elena", "no,such (name)"]).execute()
    negated = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .not_.in_("name", ["Anna", "elena"]).execute()
    empty = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .in_("name", []).execute()
    assert names(result.data) == ["Anna", "elena"]
    assert names(negated.data) == ["Boris", "Clara", "Dmitry"]
    assert empty.data == []


async def test_in_filter_casts_to_the_column_type(service_client: AsyncClient, org: Fixture) -> None:
    rows = await service_client.table("clients").select("id,name").eq("organization_id", org.organization_id) \
        .in_("name", ["Anna", "Boris"]).execute()
    by_id = await service_client.table("clients").select("name") \
        .in_("id", [row["id"] for row in rows.data]).execute()
    assert names(by_id.data) == ["Anna", "Boris"]


async def test_or_filter_with_nested_and(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .or_("name.eq.Anna,and(is_active.is.false,phone.is.null)").execute()
    assert names(result.data) == ["Anna", "Clara"]


async def test_not_or_filter(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .not_.or_("name.eq.Anna,name.eq.Boris").execute()
    assert names(result.data) == ["Clara", "Dmitry", "elena"]


async def test_match_and_imatch(service_client: AsyncClient, org: Fixture) -> None:
    base = service_client.table("clients").select("name").eq("organization_id", org.organization_id)
    result = await base.filter("name", "imatch", "^(anna|ELENA)$").execute()
    assert names(result.data) == ["Anna", "elena"]


async def test_order_descending_with_nulls_last_then_limit_and_offset(service_client: AsyncClient,
                                                                      org: Fixture) -> None:
    result = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .order("phone", desc=True, nullsfirst=False).order("name").limit(3).offset(1).execute()
    assert [row["name"] for row in result.data] == ["Dmitry", "Boris", "Anna"]


async def test_order_nulls_first(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .order("last_message_at", nullsfirst=True).order("name").execute()
    assert [row["name"] for row in result.data][:2] == ["Boris", "Dmitry"]


async def test_range_pages_through_rows(service_client: AsyncClient, org: Fixture) -> None:
    first = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .order("name").range(0, 1).execute()
    second = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .order("name").range(2, 3).execute()
    assert [row["name"] for row in first.data + second.data] == ["Anna", "Boris", "Clara", "Dmitry"]


async def test_count_exact_reports_the_filtered_total_beside_a_page(service_client: AsyncClient,
                                                                    org: Fixture) -> None:
    result = await service_client.table("clients").select("id", count="exact") \
        .eq("organization_id", org.organization_id).limit(2).execute()
    assert len(result.data) == 2
    assert result.count == 5


async def test_count_exact_of_no_rows_is_zero(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("id", count="exact") \
        .eq("organization_id", org.organization_id).eq("name", "nobody").execute()
    assert result.data == []
    assert result.count == 0


async def test_head_request_counts_without_rows(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("id", count="exact", head=True) \
        .eq("organization_id", org.organization_id).execute()
    assert result.count == 5


async def test_single_returns_one_object(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("name,phone") \
        .eq("organization_id", org.organization_id).eq("name", "Anna").single().execute()
    assert result.data == {"name": "Anna", "phone": "+7001"}


@pytest.mark.parametrize("name_filter", ["nobody", None])
async def test_single_without_exactly_one_row_is_pgrst116(service_client: AsyncClient, org: Fixture,
                                                          name_filter: str | None) -> None:
    query = service_client.table("clients").select("name").eq("organization_id", org.organization_id)
    if name_filter:
        query = query.eq("name", name_filter)
    with pytest.raises(APIError) as raised:
        await query.single().execute()
    assert raised.value.code == "PGRST116"


async def test_maybe_single_returns_none_or_the_row(service_client: AsyncClient, org: Fixture) -> None:
    none = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .eq("name", "nobody").maybe_single().execute()
    one = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .eq("name", "Clara").maybe_single().execute()
    assert none is None
    assert one is not None and one.data == {"name": "Clara"}


async def test_timestamp_filter_with_offset(service_client: AsyncClient, org: Fixture) -> None:
    recent = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .gte("last_message_at", "2000-01-01T00:00:00+00:00").execute()
    assert names(recent.data) == ["Anna", "Clara", "elena"]


async def test_like_any_and_ilike_all(service_client: AsyncClient, org: Fixture) -> None:
    any_of = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .like_any_of("name", "A%,B%").execute()
    all_of = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .ilike_all_of("name", "%A%,%N%").execute()
    assert names(any_of.data) == ["Anna", "Boris"]
    assert names(all_of.data) == ["Anna", "elena"]


async def test_full_text_search(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("name").eq("organization_id", org.organization_id) \
        .text_search("name", "dmitry", {"config": "simple"}).execute()
    assert names(result.data) == ["Dmitry"]


async def test_contained_by_on_jsonb(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("messenger_integrations").select("id") \
        .eq("organization_id", org.organization_id) \
        .contained_by("settings->phones", json.dumps(["+7001", "+7002", "+7003"])).execute()
    assert result.data == [{"id": org.integration_id}]


async def test_strip_nulls_drops_null_fields(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("clients").select("name,phone").eq("organization_id", org.organization_id) \
        .eq("name", "Clara").strip_nulls().execute()
    assert result.data == [{"name": "Clara"}]


async def test_order_by_json_path(service_client: AsyncClient, org: Fixture) -> None:
    result = await service_client.table("messenger_integrations").select("settings->>mode") \
        .eq("organization_id", org.organization_id).order("settings->>mode", desc=True).execute()
    assert result.data == [{"mode": "live"}]
