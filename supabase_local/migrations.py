"""Applies the Supabase bootstrap, `supabase/migrations/*.sql` in filename order, and `supabase/seed.sql`.

Applied versions are recorded in `supabase_migrations.schema_migrations` (as the Supabase CLI does), so a second
run applies nothing; each migration runs in its own transaction, so a failing one leaves no half-applied schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "supabase" / "migrations"
SEED_FILE = PROJECT_ROOT / "supabase" / "seed.sql"
CONFIG_TOML = PROJECT_ROOT / "supabase" / "config.toml"  # `[auth]` is read by supabase_local.auth.config
# In order: roles and `auth` first, then `storage`, whose grants name those roles.
BOOTSTRAP_FILES = ("bootstrap.sql", "storage.sql")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path


class MigrationError(RuntimeError):
    """A migration file failed; the message names it."""


def list_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit() or len(version) != 14:
            raise MigrationError(f"{path.name}: expected <UTC yyyymmddHHMMSS>_<name>.sql")
        migrations.append(Migration(version=version, name=name, path=path))
    return migrations


async def bootstrap(conn: asyncpg.Connection, authenticator_password: str,
                    auth_admin_password: str | None = None) -> None:
    """Create what hosted Supabase has before migrations: roles, the auth and storage schemas, the migrations
    table. `auth_admin_password` lets the local auth service log in as `supabase_auth_admin`."""
    sql_dir = resources.files("supabase_local").joinpath("sql")
    async with conn.transaction():
        # Serialise concurrent starters on the same database (CREATE ROLE has no IF NOT EXISTS).
        await conn.execute("SELECT pg_advisory_xact_lock(7270031)")
        for name in BOOTSTRAP_FILES:
            await conn.execute(sql_dir.joinpath(name).read_text())
        statement = await conn.fetchval("SELECT format('ALTER ROLE authenticator PASSWORD %L', $1::text)",
                                        authenticator_password)
        await conn.execute(statement)
        if auth_admin_password is not None:
            await conn.execute(await conn.fetchval(
                "SELECT format('ALTER ROLE supabase_auth_admin PASSWORD %L', $1::text)", auth_admin_password))


async def applied_versions(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT version FROM supabase_migrations.schema_migrations")
    return {row["version"] for row in rows}


async def apply_migrations(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the migrations not yet recorded; returns the versions applied now."""
    applied_now: list[str] = []
    for migration in list_migrations(directory):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7270032)")
            if migration.version in await applied_versions(conn):
                continue
            try:
                await conn.execute(migration.path.read_text())
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.path.name}: {exc}") from exc
            await conn.execute(
                "INSERT INTO supabase_migrations.schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
        applied_now.append(migration.version)
    return applied_now


async def apply_seed(conn: asyncpg.Connection, path: Path = SEED_FILE) -> None:
    """The seed is written with ON CONFLICT DO NOTHING, so applying it again changes nothing."""
    async with conn.transaction():
        await conn.execute(path.read_text())
