"""Migrations: applied in filename order to an empty database, recorded, and a no-op the second time."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from supabase_local.database import DatabaseUrls, LocalDatabase
from supabase_local.migrations import MIGRATIONS_DIR, MigrationError, apply_migrations, bootstrap, list_migrations

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


@contextlib.asynccontextmanager
async def database_before(local_database: LocalDatabase, version: str, directory: Path) -> AsyncIterator[
        asyncpg.Connection]:
    """A fresh database of the cluster with the migrations older than `version` applied, as a deployed one is."""
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(local_database.admin_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    directory.mkdir()
    for migration in list_migrations():
        if migration.version < version:
            shutil.copy(migration.path, directory / migration.path.name)
    conn = await asyncpg.connect(local_database.admin_url.rsplit("/", 1)[0] + "/" + name)
    try:
        # Roles are the cluster's: bootstrap keeps the authenticator's password the other tests connect with.
        await bootstrap(conn, urlsplit(local_database.urls().authenticator).password or "")
        await apply_migrations(conn, directory)
        yield conn
    finally:
        await conn.close()
        admin = await asyncpg.connect(local_database.admin_url)
        try:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        finally:
            await admin.close()


async def test_the_redelivery_key_migration_keeps_every_row_and_lets_any_integration_go(
        local_database: LocalDatabase, tmp_path) -> None:
    """A database from before 20261201090000, with the states its defects left: orphaned rows whose Telegram ids
    overlap across organizations, and rows without account metadata. Upgraded, nothing is lost and removal works."""
    async with database_before(local_database, "20261201090000", tmp_path / "before") as conn:
        orgs = [await conn.fetchval("INSERT INTO organizations (name) VALUES ($1) RETURNING id", f"o{n}")
                for n in range(2)]
        integrations, clients = [], []
        for number, org in enumerate(orgs):
            integrations.append(await conn.fetchval(
                "INSERT INTO messenger_integrations (organization_id, provider, settings) "
                "VALUES ($1, 'telegram_crm', $2::jsonb) RETURNING id", org, f'{{"crmPhoneNumber": "+7999000000{number}"}}'))
            clients.append(await conn.fetchval(
                "INSERT INTO clients (organization_id, name, telegram_user_id, telegram_chat_id) "
                "VALUES ($1, 'c', '42', '42') RETURNING id", org))
        insert = ("INSERT INTO chat_messages (organization_id, client_id, integration_id, message_type, is_outgoing, "
                  "external_message_id, metadata, message_text) VALUES ($1, $2, $3, 'client', false, '5', $4::jsonb, $5)")
        # Organization 0: message 5 with its metadata, then its integration removed (the row is orphaned).
        await conn.execute(insert, orgs[0], clients[0], integrations[0],
                           '{"account_phone": "+79990000000", "chat_id": "42"}', "org0")
        await conn.execute("DELETE FROM messenger_integrations WHERE id = $1", integrations[0])
        # Organization 1: message 5 without metadata (an older sender), its integration still there.
        await conn.execute(insert, orgs[1], clients[1], integrations[1], "{}", "org1")

        await apply_migrations(conn)

        rows = await conn.fetch("SELECT organization_id, external_account, external_chat_id, message_text "
                                "FROM chat_messages ORDER BY message_text")
        assert [(row["external_account"], row["external_chat_id"], row["message_text"]) for row in rows] == [
            ("+79990000000", "42", "org0"), ("+79990000001", "42", "org1")]
        # Removing the other integration used to fail here: two orphaned "message 5" were one key.
        await conn.execute("DELETE FROM messenger_integrations WHERE id = $1", integrations[1])
        assert await conn.fetchval("SELECT count(*) FROM chat_messages WHERE integration_id IS NULL") == 2


async def test_the_tenant_integrity_migration_repairs_cross_organization_rows_without_losing_one(
        local_database: LocalDatabase, tmp_path) -> None:
    """A database from before 20261210090000 holding what its single-column foreign keys let in: organization 0's
    messages naming organization 1's client and integration, its notifications addressed to organization 1's user
    and to a user with no profile. Upgraded, every row is still there, each now points inside its own organization
    (a client of its own, integration_id NULL, user_id NULL), and each repair is recorded with the old value."""
    async with database_before(local_database, "20261210090000", tmp_path / "before") as conn:
        orgs, clients, integrations, users = [], [], [], []
        for number in range(2):
            orgs.append(await conn.fetchval("INSERT INTO organizations (name) VALUES ($1) RETURNING id", f"o{number}"))
            clients.append(await conn.fetchval(
                "INSERT INTO clients (organization_id, name) VALUES ($1, 'c') RETURNING id", orgs[number]))
            integrations.append(await conn.fetchval(
                "INSERT INTO messenger_integrations (organization_id, provider) VALUES ($1, 'wappi') RETURNING id",
                orgs[number]))
            users.append(await conn.fetchval("INSERT INTO auth.users (email) VALUES ($1) RETURNING id",
                                             f"u{number}@upgrade.test"))
            await conn.execute("INSERT INTO profiles (id, organization_id) VALUES ($1, $2)", users[number],
                               orgs[number])
        profileless = await conn.fetchval("INSERT INTO auth.users (email) VALUES ('nobody@upgrade.test') RETURNING id")
        messages = {}
        for text, client, integration in (("own", 0, 0), ("their client", 1, 0), ("their integration", 0, 1),
                                          ("both theirs", 1, 1)):
            messages[text] = await conn.fetchval(
                "INSERT INTO chat_messages (organization_id, client_id, integration_id, message_type, message_text) "
                "VALUES ($1, $2, $3, 'manager', $4) RETURNING id", orgs[0], clients[client], integrations[integration],
                text)
        notifications = {}
        for title, user in (("own", users[0]), ("their user", users[1]), ("no profile", profileless),
                            ("everyone", None)):
            notifications[title] = await conn.fetchval(
                "INSERT INTO notifications (organization_id, user_id, type, title) VALUES ($1, $2, 'note', $3) "
                "RETURNING id", orgs[0], user, title)
        notices: list[str] = []
        conn.add_log_listener(lambda _, message: notices.append(message.message))

        await apply_migrations(conn)

        stored = {row["message_text"]: row for row in await conn.fetch(
            "SELECT m.message_text, m.organization_id, m.client_id, m.integration_id, c.organization_id AS client_org "
            "FROM chat_messages AS m JOIN clients AS c ON c.id = m.client_id")}
        assert sorted(stored) == sorted(messages)
        assert {row["organization_id"] for row in stored.values()} == {orgs[0]}
        assert {row["client_org"] for row in stored.values()} == {orgs[0]}
        assert (stored["own"]["client_id"], stored["own"]["integration_id"]) == (clients[0], integrations[0])
        assert stored["their integration"]["client_id"] == clients[0]
        # The messages that named the other organization's client now share one client of their own organization.
        placeholder = stored["their client"]["client_id"]
        assert placeholder not in clients and stored["both theirs"]["client_id"] == placeholder
        assert [stored[text]["integration_id"] for text in ("their client", "their integration", "both theirs")] == [
            integrations[0], None, None]
        addressed = dict(await conn.fetch("SELECT title, user_id FROM notifications WHERE organization_id = $1",
                                          orgs[0]))
        assert addressed == {"own": users[0], "their user": None, "no profile": None, "everyone": None}

        repairs = {(row["table_name"], row["row_id"], row["column_name"]): row["original_value"]
                   for row in await conn.fetch("SELECT * FROM supabase_migrations.tenant_integrity_repairs")}
        assert repairs == {
            ("chat_messages", messages["their client"], "client_id"): clients[1],
            ("chat_messages", messages["both theirs"], "client_id"): clients[1],
            ("chat_messages", messages["their integration"], "integration_id"): integrations[1],
            ("chat_messages", messages["both theirs"], "integration_id"): integrations[1],
            ("notifications", notifications["their user"], "user_id"): users[1],
            ("notifications", notifications["no profile"], "user_id"): profileless,
        }
        assert any("tenant_integrity_repairs" in notice for notice in notices), notices
