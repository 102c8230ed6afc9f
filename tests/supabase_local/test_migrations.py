"""Migrations: applied in filename order to an empty database, recorded, and a no-op the second time."""

from __future__ import annotations

import asyncpg
import pytest

from supabase_local.database import DatabaseUrls, LocalDatabase
from supabase_local.migrations import MIGRATIONS_DIR, MigrationError, apply_migrations, list_migrations

EXPECTED_TABLES = {"organizations", "profiles", "clients", "messenger_integrations", "chat_messages", "notifications"}


async def test_all_migrations_are_recorded_in_order(database_urls: DatabaseUrls) -> None:
    conn = await asyncpg.connect(database_urls.admin)
    try:
        rows = await conn.fetch("SELECT version FROM supabase_migrations.schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [row["version"] for row in rows] == [m.version for m in list_migrations()]


async def test_second_run_applies_nothing(local_database: LocalDatabase) -> None:
    assert await local_database.prepare(seed=True) == []


async def test_tables_exist_with_row_level_security(database_urls: DatabaseUrls) -> None:
    conn = await asyncpg.connect(database_urls.admin)
    try:
        rows = await conn.fetch(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        )
    finally:
        await conn.close()
    security = {row["relname"]: row["relrowsecurity"] for row in rows}
    assert EXPECTED_TABLES <= security.keys()
    assert all(security[name] for name in EXPECTED_TABLES)


async def test_one_primary_integration_per_organization(database_urls: DatabaseUrls) -> None:
    conn = await asyncpg.connect(database_urls.admin)
    try:
        org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('primary-test') RETURNING id")
        await conn.execute(
            "INSERT INTO messenger_integrations (organization_id, provider, is_primary) VALUES ($1, 'wappi', true)", org
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO messenger_integrations (organization_id, provider, is_primary) VALUES ($1, 'wappi', true)",
                org,
            )
    finally:
        await conn.close()


async def test_updated_at_is_kept_by_the_database(database_urls: DatabaseUrls) -> None:
    conn = await asyncpg.connect(database_urls.admin)
    try:
        org = await conn.fetchval("INSERT INTO organizations (name) VALUES ('touch') RETURNING id")
        client = await conn.fetchrow(
            "INSERT INTO clients (organization_id, name, updated_at) VALUES ($1, 'c', now() - interval '1 day') "
            "RETURNING id, updated_at",
            org,
        )
        after = await conn.fetchval("UPDATE clients SET name = 'd' WHERE id = $1 RETURNING updated_at", client["id"])
    finally:
        await conn.close()
    assert after > client["updated_at"]


async def test_a_badly_named_migration_is_refused(tmp_path) -> None:
    (tmp_path / "create_things.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="yyyymmddHHMMSS"):
        list_migrations(tmp_path)


async def test_a_failing_migration_leaves_nothing_behind(database_urls: DatabaseUrls, tmp_path) -> None:
    (tmp_path / "20991231000000_half.sql").write_text(
        "CREATE TABLE public.half_applied (id int); SELECT no_such_function();"
    )
    conn = await asyncpg.connect(database_urls.admin)
    try:
        with pytest.raises(MigrationError, match="20991231000000_half.sql"):
            await apply_migrations(conn, tmp_path)
        assert await conn.fetchval("SELECT to_regclass('public.half_applied')") is None
        assert await conn.fetchval(
            "SELECT count(*) FROM supabase_migrations.schema_migrations WHERE version = '20991231000000'"
        ) == 0
    finally:
        await conn.close()


def test_migrations_directory_is_the_projects() -> None:
    assert MIGRATIONS_DIR.name == "migrations" and MIGRATIONS_DIR.parent.name == "supabase"
