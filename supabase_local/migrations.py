"""Applies the Supabase bootstrap, `supabase/migrations/*.sql` in filename order, and `supabase/seed.sql`.

Applied versions are recorded in `supabase_migrations.schema_migrations` (as the Supabase CLI does), so a second
run applies nothing; each migration runs in its own transaction, so a failing one leaves no half-applied schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

from supabase_local.project_files import migrations_dir, seed_file

MIGRATIONS_DIR = migrations_dir()
SEED_FILE = seed_file()


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


async def bootstrap(conn: asyncpg.Connection, authenticator_password: str) -> None:
    """Create what hosted Supabase has before migrations: roles, the auth schema, the migrations table."""
    sql = resources.files("supabase_local").joinpath("sql/bootstrap.sql").read_text()
    async with conn.transaction():
        # Serialise concurrent starters on the same database (CREATE ROLE has no IF NOT EXISTS).
        await conn.execute("SELECT pg_advisory_xact_lock(7270031)")
        await conn.execute(sql)
        statement = await conn.fetchval("SELECT format('ALTER ROLE authenticator PASSWORD %L', $1::text)",
                                        authenticator_password)
        await conn.execute(statement)


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
