"""`tgcrm db migrate` against a second PostgreSQL (embedded, plain: no Supabase roles until --bootstrap), as one
would run it against a hosted project: the history table is the Supabase CLI's, and either side's versions count.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from supabase_local.migrations import HISTORY_TABLE_STATEMENTS, apply_migrations, list_migrations, split_statements
from supabase_local.postgres import EmbeddedPostgres, PostgresConfig
from tests.e2e.stack_process import hermetic_env
from tests.helpers.net import free_port


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    with tempfile.TemporaryDirectory(prefix="tgcrm-migrate-") as directory:
        postgres = EmbeddedPostgres(PostgresConfig(data_dir=Path(directory) / "pg", port=free_port(), durable=False))
        postgres.start()
        try:
            yield postgres
        finally:
            postgres.stop()


_NAMES = iter(range(1000))


@pytest.fixture
def database_url(server: EmbeddedPostgres) -> str:
    """A new, empty database on the second server for each test."""
    name = f"target_{next(_NAMES)}"

    async def create() -> None:
        conn = await asyncpg.connect(server.dsn)
        try:
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    asyncio.run(create())
    return server.dsn.rsplit("/", 1)[0] + f"/{name}"


def migrate(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tgcrm", "db", "migrate", *extra], capture_output=True, text=True,
                          env=hermetic_env(), timeout=120)


def fetch(url: str, query: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query)
        finally:
            await conn.close()

    return asyncio.run(run())


def test_a_plain_postgresql_is_refused_naming_what_supabase_would_provide(database_url: str) -> None:
    done = migrate("--database-url", database_url)
    assert done.returncode == 2
    assert "role anon" in done.stderr and "auth.users" in done.stderr and "--bootstrap" in done.stderr
    assert fetch(database_url, "SELECT to_regclass('public.clients') AS t")[0]["t"] is None


def test_migrate_records_every_version_as_the_supabase_cli_does(database_url: str) -> None:
    done = migrate("--database-url", database_url, "--bootstrap")
    assert done.returncode == 0, done.stderr
    expected = list_migrations()
    assert done.stdout.split() == [word for m in expected for word in ("applied", m.version)]
    columns = fetch(database_url, "SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_schema = 'supabase_migrations' AND table_name = 'schema_migrations'")
    assert {(row["column_name"], row["data_type"]) for row in columns} >= {
        ("version", "text"), ("statements", "ARRAY"), ("name", "text")}
    rows = fetch(database_url, "SELECT version, name, statements FROM supabase_migrations.schema_migrations "
                               "ORDER BY version")
    assert [(row["version"], row["name"]) for row in rows] == [(m.version, m.name) for m in expected]
    for row, migration in zip(rows, expected):
        assert row["statements"] == split_statements(migration.path.read_text())
    assert fetch(database_url, "SELECT to_regclass('public.chat_messages') AS t")[0]["t"] is not None
    assert fetch(database_url, "SELECT count(*) AS n FROM public.organizations")[0]["n"] == 0  # never seeded


def test_a_second_run_is_up_to_date(database_url: str) -> None:
    assert migrate("--database-url", database_url, "--bootstrap").returncode == 0
    again = migrate("--database-url", database_url)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "" and "up to date" in again.stderr


def test_the_database_url_is_never_printed(database_url: str) -> None:
    password_url = database_url.replace("/target_", "/no_such_database_")
    done = migrate("--database-url", password_url)
    assert done.returncode == 1
    password = database_url.split(":")[2].split("@")[0]
    assert password not in done.stderr + done.stdout


async def test_versions_the_cli_recorded_are_skipped_and_its_table_is_extended(database_url: str,
                                                                               tmp_path: Path) -> None:
    """A history table made by an older Supabase CLI (version only), one version in it: ours skips that one."""
    (tmp_path / "20990101000000_first.sql").write_text("CREATE TABLE public.first_one (id int);")
    (tmp_path / "20990102000000_second.sql").write_text("CREATE TABLE public.second_one (id int);")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(HISTORY_TABLE_STATEMENTS[0])
        await conn.execute(HISTORY_TABLE_STATEMENTS[1])
        await conn.execute("INSERT INTO supabase_migrations.schema_migrations (version) VALUES ('20990101000000')")
        assert await apply_migrations(conn, tmp_path) == ["20990102000000"]
        assert await conn.fetchval("SELECT to_regclass('public.first_one')") is None
        row = await conn.fetchrow("SELECT name, statements FROM supabase_migrations.schema_migrations "
                                  "WHERE version = '20990102000000'")
        assert (row["name"], row["statements"]) == ("second", ["CREATE TABLE public.second_one (id int);"])
    finally:
        await conn.close()


def test_statements_are_split_as_written_with_bodies_whole() -> None:
    sql = ("-- a comment\nCREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END; $body$;\n"
           "DO $$ BEGIN PERFORM ';'; END $$;\n-- trailing comment only\n")
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[0].endswith("$body$;") and "RETURN 1; END;" in statements[0]
    assert statements[1] == "DO $$ BEGIN PERFORM ';'; END $$;"
