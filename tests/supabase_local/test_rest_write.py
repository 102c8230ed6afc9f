"""Writes through the REST gateway with supabase-py: insert, upsert, update, delete, and what they return."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod
from supabase import AsyncClient

from supabase_local.database import DatabaseUrls


@pytest.fixture(scope="module")
async def organization_id(database_urls: DatabaseUrls) -> str:
    value = str(uuid.uuid4())
    conn = await asyncpg.connect(database_urls.admin)
    try:
        await conn.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Write tests')", value)
    finally:
        await conn.close()
    return value


def tag() -> str:
    """A unique name prefix per test, so tests that share the organization never see each other's rows."""
    return f"t{uuid.uuid4().hex[:10]}"


async def test_insert_one_returns_the_row_with_defaults(service_client: AsyncClient, organization_id: str) -> None:
    name = tag()
    result = await service_client.table("clients").insert({"organization_id": organization_id, "name": name}) \
        .execute()
    [row] = result.data
    assert row["name"] == name
    assert row["is_active"] is True  # a key left out of the object takes the column default
    uuid.UUID(row["id"])


async def test_insert_many_in_one_request(service_client: AsyncClient, organization_id: str) -> None:
    prefix = tag()
    rows = [{"organization_id": organization_id, "name": f"{prefix}-{i}", "phone": f"+{i}"} for i in range(3)]
    result = await service_client.table("clients").insert(rows).execute()
    assert sorted(row["name"] for row in result.data) == [f"{prefix}-{i}" for i in range(3)]


async def test_bulk_insert_missing_keys_are_null_by_default(service_client: AsyncClient,
                                                            organization_id: str) -> None:
    prefix = tag()
    rows = [{"organization_id": organization_id, "name": f"{prefix}-a", "phone": "+1"},
            {"organization_id": organization_id, "name": f"{prefix}-b"}]
    result = await service_client.table("clients").insert(rows).execute()
    phones = {row["name"]: row["phone"] for row in result.data}
    assert phones == {f"{prefix}-a": "+1", f"{prefix}-b": None}


async def test_bulk_insert_missing_keys_take_defaults_when_asked(service_client: AsyncClient,
                                                                 organization_id: str) -> None:
    prefix = tag()
    rows = [{"organization_id": organization_id, "name": f"{prefix}-a", "is_active": False},
            {"organization_id": organization_id, "name": f"{prefix}-b"}]
    result = await service_client.table("clients").insert(rows, default_to_null=False).execute()
    active = {row["name"]: row["is_active"] for row in result.data}
    assert active == {f"{prefix}-a": False, f"{prefix}-b": True}


async def test_insert_returning_minimal_has_no_body(service_client: AsyncClient, organization_id: str) -> None:
    name = tag()
    result = await service_client.table("clients").insert(
        {"organization_id": organization_id, "name": name}, returning=ReturnMethod.minimal).execute()
    stored = await service_client.table("clients").select("name").eq("name", name).execute()
    assert result.data == []
    assert stored.data == [{"name": name}]


async def test_insert_with_select_returns_only_those_columns(service_client: AsyncClient,
                                                             organization_id: str) -> None:
    name = tag()
    result = await service_client.table("clients").insert({"organization_id": organization_id, "name": name}) \
        .select("name,is_active").execute()
    assert result.data == [{"name": name, "is_active": True}]


async def test_insert_count_exact(service_client: AsyncClient, organization_id: str) -> None:
    prefix = tag()
    rows = [{"organization_id": organization_id, "name": f"{prefix}-{i}"} for i in range(4)]
    result = await service_client.table("clients").insert(rows, count="exact").execute()
    assert result.count == 4


async def test_upsert_merges_on_conflict_columns(service_client: AsyncClient, organization_id: str) -> None:
    name = tag()
    row = {"organization_id": organization_id, "telegram_user_id": name, "name": "first"}
    first = await service_client.table("clients").upsert(row, on_conflict="organization_id,telegram_user_id") \
        .execute()
    second = await service_client.table("clients").upsert(
        {**row, "name": "second"}, on_conflict="organization_id,telegram_user_id").execute()
    stored = await service_client.table("clients").select("id,name").eq("telegram_user_id", name).execute()
    assert first.data[0]["id"] == second.data[0]["id"]
    assert stored.data == [{"id": first.data[0]["id"], "name": "second"}]


async def test_upsert_on_primary_key_by_default(service_client: AsyncClient, organization_id: str) -> None:
    client_id = str(uuid.uuid4())
    await service_client.table("clients").upsert({"id": client_id, "organization_id": organization_id,
                                                  "name": "before"}).execute()
    result = await service_client.table("clients").upsert({"id": client_id, "organization_id": organization_id,
                                                           "name": "after"}).execute()
    assert result.data[0]["name"] == "after"


async def test_upsert_ignore_duplicates_keeps_the_stored_row(service_client: AsyncClient,
                                                             organization_id: str) -> None:
    name = tag()
    row = {"organization_id": organization_id, "telegram_user_id": name, "name": "kept"}
    await service_client.table("clients").insert(row).execute()
    result = await service_client.table("clients").upsert(
        {**row, "name": "ignored"}, on_conflict="organization_id,telegram_user_id", ignore_duplicates=True).execute()
    stored = await service_client.table("clients").select("name").eq("telegram_user_id", name).execute()
    assert result.data == []  # nothing was inserted, so nothing is represented
    assert stored.data == [{"name": "kept"}]


async def test_update_with_filters_changes_only_matching_rows(service_client: AsyncClient,
                                                              organization_id: str) -> None:
    prefix = tag()
    await service_client.table("clients").insert(
        [{"organization_id": organization_id, "name": f"{prefix}-{i}", "phone": None} for i in range(3)]).execute()
    result = await service_client.table("clients").update({"phone": "+999", "is_active": False}) \
        .like("name", f"{prefix}-%").neq("name", f"{prefix}-2").execute()
    stored = await service_client.table("clients").select("name,phone,is_active").like("name", f"{prefix}-%") \
        .order("name").execute()
    assert sorted(row["name"] for row in result.data) == [f"{prefix}-0", f"{prefix}-1"]
    assert stored.data == [
        {"name": f"{prefix}-0", "phone": "+999", "is_active": False},
        {"name": f"{prefix}-1", "phone": "+999", "is_active": False},
        {"name": f"{prefix}-2", "phone": None, "is_active": True},
    ]


async def test_update_of_jsonb_column_and_minimal_return(service_client: AsyncClient, organization_id: str) -> None:
    integration = await service_client.table("messenger_integrations").insert(
        {"organization_id": organization_id, "provider": "wappi", "webhook_key": tag()}).execute()
    integration_id = integration.data[0]["id"]
    result = await service_client.table("messenger_integrations").update(
        {"settings": {"token": "abc", "nested": [1, 2]}}, returning=ReturnMethod.minimal).eq("id", integration_id) \
        .execute()
    stored = await service_client.table("messenger_integrations").select("settings").eq("id", integration_id) \
        .single().execute()
    assert result.data == []
    assert stored.data == {"settings": {"token": "abc", "nested": [1, 2]}}


async def test_update_count_exact(service_client: AsyncClient, organization_id: str) -> None:
    prefix = tag()
    await service_client.table("clients").insert(
        [{"organization_id": organization_id, "name": f"{prefix}-{i}"} for i in range(2)]).execute()
    result = await service_client.table("clients").update({"phone": "+1"}, count="exact") \
        .like("name", f"{prefix}-%").execute()
    assert result.count == 2


async def test_delete_with_filters_returns_the_deleted_rows(service_client: AsyncClient,
                                                            organization_id: str) -> None:
    prefix = tag()
    await service_client.table("clients").insert(
        [{"organization_id": organization_id, "name": f"{prefix}-{i}"} for i in range(3)]).execute()
    deleted = await service_client.table("clients").delete().in_("name", [f"{prefix}-0", f"{prefix}-1"]).execute()
    left = await service_client.table("clients").select("name").like("name", f"{prefix}-%").execute()
    assert sorted(row["name"] for row in deleted.data) == [f"{prefix}-0", f"{prefix}-1"]
    assert left.data == [{"name": f"{prefix}-2"}]


async def test_delete_returning_minimal(service_client: AsyncClient, organization_id: str) -> None:
    name = tag()
    await service_client.table("clients").insert({"organization_id": organization_id, "name": name}).execute()
    result = await service_client.table("clients").delete(returning=ReturnMethod.minimal).eq("name", name).execute()
    left = await service_client.table("clients").select("name").eq("name", name).execute()
    assert result.data == []
    assert left.data == []


async def test_single_on_a_write_touching_two_rows_rolls_back(service_client: AsyncClient,
                                                              organization_id: str) -> None:
    prefix = tag()
    await service_client.table("clients").insert(
        [{"organization_id": organization_id, "name": f"{prefix}-{i}"} for i in range(2)]).execute()
    with pytest.raises(APIError) as raised:
        await service_client.table("clients").update({"phone": "+7"}).like("name", f"{prefix}-%").single() \
            .execute()
    stored = await service_client.table("clients").select("phone").like("name", f"{prefix}-%").execute()
    assert raised.value.code == "PGRST116"
    assert stored.data == [{"phone": None}, {"phone": None}]


async def test_max_affected_refuses_and_rolls_back(service_client: AsyncClient, organization_id: str) -> None:
    prefix = tag()
    await service_client.table("clients").insert(
        [{"organization_id": organization_id, "name": f"{prefix}-{i}"} for i in range(3)]).execute()
    with pytest.raises(APIError) as raised:
        await service_client.table("clients").delete().like("name", f"{prefix}-%").max_affected(2).execute()
    left = await service_client.table("clients").select("name", count="exact").like("name", f"{prefix}-%") \
        .execute()
    assert raised.value.code == "PGRST124"
    assert left.count == 3


async def test_bulk_upsert_merges_each_row(service_client: AsyncClient, organization_id: str) -> None:
    prefix = tag()
    rows = [{"organization_id": organization_id, "telegram_user_id": f"{prefix}-{i}", "name": "old"}
            for i in range(2)]
    await service_client.table("clients").insert(rows[:1]).execute()
    result = await service_client.table("clients").upsert(
        [{**row, "name": "new"} for row in rows], on_conflict="organization_id,telegram_user_id").execute()
    stored = await service_client.table("clients").select("name", count="exact") \
        .like("telegram_user_id", f"{prefix}-%").execute()
    assert len(result.data) == 2
    assert stored.count == 2 and {row["name"] for row in stored.data} == {"new"}
