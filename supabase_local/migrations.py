"""Applies the Supabase bootstrap, `supabase/migrations/*.sql` in filename order, and `supabase/seed.sql`, to the
local stack's database and (`tgcrm db migrate`) to any PostgreSQL, a hosted Supabase project's included.

Applied versions are recorded in `supabase_migrations.schema_migrations` exactly as the Supabase CLI records them
(`version`, `statements`, `name`), so `supabase db push` and this code skip each other's work and a second run
applies nothing; each migration runs in its own transaction, so a failing one leaves no half-applied schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg
import sqlparse

from supabase_local.project_files import config_toml, migrations_dir, seed_file

MIGRATIONS_DIR = migrations_dir()
SEED_FILE = seed_file()
CONFIG_TOML = config_toml()  # `[auth]` is read by supabase_local.auth.config
# In order: roles and `auth` first, then `storage`, whose grants name those roles.
BOOTSTRAP_FILES = ("bootstrap.sql", "storage.sql")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path


class MigrationError(RuntimeError):
    """A migration file failed; the message names it."""


# The Supabase CLI's own statements for its history table (pkg/migration/history.go), so a table either side made
# is the same table, and one made by an older CLI (version only) is brought up to date the way the CLI does it.
HISTORY_TABLE_STATEMENTS = (
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY)",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[]",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text",
)
# What the migrations use that Supabase creates, not they: a plain PostgreSQL needs `bootstrap` first.
SUPABASE_ROLES = ("anon", "authenticated", "service_role")


def split_statements(sql: str) -> list[str]:
    """One migration file as the statements the CLI would record (comments kept with the statement they precede;
    dollar-quoted bodies stay whole)."""
    statements = (statement.strip() for statement in sqlparse.split(sql))
    return [statement for statement in statements if sqlparse.format(statement, strip_comments=True).strip()]


def list_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit() or len(version) != 14:
            raise MigrationError(f"{path.name}: expected <UTC yyyymmddHHMMSS>_<name>.sql")
        migrations.append(Migration(version=version, name=name, path=path))
    return migrations


async def bootstrap(conn: asyncpg.Connection, authenticator_password: str | None,
                    auth_admin_password: str | None = None) -> None:
    """Create what hosted Supabase has before migrations: roles, the auth schema and its claim helpers, the storage
    schema. `auth_admin_password` lets the local auth service log in as `supabase_auth_admin`.

    Without passwords those logins stay without one (nothing can log in as them): `tgcrm db migrate --bootstrap`
    prepares a schema, not a REST gateway or an auth service.
    """
    sql_dir = resources.files("supabase_local").joinpath("sql")
    async with conn.transaction():
        # Serialise concurrent starters on the same database (CREATE ROLE has no IF NOT EXISTS).
        await conn.execute("SELECT pg_advisory_xact_lock(7270031)")
        for name in BOOTSTRAP_FILES:
            await conn.execute(sql_dir.joinpath(name).read_text())
        if authenticator_password is not None:
            statement = await conn.fetchval("SELECT format('ALTER ROLE authenticator PASSWORD %L', $1::text)",
                                            authenticator_password)
            await conn.execute(statement)
        if auth_admin_password is not None:
            await conn.execute(await conn.fetchval(
                "SELECT format('ALTER ROLE supabase_auth_admin PASSWORD %L', $1::text)", auth_admin_password))


async def missing_prerequisites(conn: asyncpg.Connection) -> list[str]:
    """What the migrations expect from Supabase and this database lacks (empty on a Supabase project)."""
    missing = [f"role {role}" for role in SUPABASE_ROLES
               if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)]
    if await conn.fetchval("SELECT to_regclass('auth.users')") is None:
        missing.append("table auth.users")
    if await conn.fetchval("SELECT to_regprocedure('auth.uid()')") is None:
        missing.append("function auth.uid()")
    for table in ("storage.buckets", "storage.objects"):
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            missing.append(f"table {table}")
    return missing


async def ensure_history_table(conn: asyncpg.Connection) -> None:
    for statement in HISTORY_TABLE_STATEMENTS:
        await conn.execute(statement)


async def applied_versions(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT version FROM supabase_migrations.schema_migrations")
    return {row["version"] for row in rows}


async def apply_migrations(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded; returns the versions applied now."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7270032)")
        await ensure_history_table(conn)
    for migration in list_migrations(directory):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7270032)")
            if migration.version in await applied_versions(conn):
                continue
            # Statement by statement, as the CLI runs them: what is recorded is exactly what ran.
            statements = split_statements(migration.path.read_text())
            try:
                for statement in statements:
                    await conn.execute(statement)
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.path.name}: {exc}") from exc
            await conn.execute(
                "INSERT INTO supabase_migrations.schema_migrations (version, name, statements) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                statements,
            )
        applied_now.append(migration.version)
    return applied_now


async def apply_seed(conn: asyncpg.Connection, path: Path = SEED_FILE) -> None:
    """The seed is written with ON CONFLICT DO NOTHING, so applying it again changes nothing."""
    async with conn.transaction():
        await conn.execute(path.read_text())
