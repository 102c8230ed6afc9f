"""`tgcrm db migrate`: this project's `supabase/migrations` applied to any PostgreSQL, a hosted Supabase project's
included, with the same code and the same history table as the local stack (supabase_local/migrations.py).

It never seeds (the seed is the local demo's data) and never prints the database URL (it holds the password).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from tgcrm.command_line_settings import command_line_settings


def add_command(db_commands: argparse._SubParsersAction) -> None:
    migrate = db_commands.add_parser(
        "migrate", help="apply supabase/migrations to a PostgreSQL (e.g. a hosted Supabase project's)",
        description="Applies the migrations not yet recorded in supabase_migrations.schema_migrations, as "
                    "`supabase db push` does; already applied versions (by either) are skipped.")
    migrate.add_argument("--database-url", default=command_line_settings().database_url,
                         help="postgresql://user:password@host:port/db (default: env DATABASE_URL)")
    migrate.add_argument("--bootstrap", action="store_true",
                         help="first create what Supabase provides (roles anon/authenticated/service_role, the "
                              "auth schema): for a plain PostgreSQL only, never for a Supabase project")
    migrate.set_defaults(handler=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    from supabase_local.migrations import MigrationError

    if not args.database_url:
        print("tgcrm db migrate: give --database-url (or set DATABASE_URL)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_migrate(args.database_url, args.bootstrap))
    except MigrationError as exc:
        print(f"tgcrm db migrate: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        # asyncpg's messages name host and user at most, never the password.
        print(f"tgcrm db migrate: cannot use the database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


async def _migrate(database_url: str, with_bootstrap: bool) -> int:
    from supabase_local.migrations import apply_migrations, bootstrap, missing_prerequisites

    # No prepared-statement cache: Supabase's transaction pooler (port 6543) cannot keep one across transactions.
    conn = await asyncpg.connect(database_url, statement_cache_size=0)
    try:
        if with_bootstrap:
            await bootstrap(conn, authenticator_password=None)
        missing = await missing_prerequisites(conn)
        if missing:
            print(f"tgcrm db migrate: this database lacks what Supabase provides: {', '.join(missing)}. A Supabase "
                  "project has them; for a plain PostgreSQL add --bootstrap.", file=sys.stderr)
            return 2
        applied = await apply_migrations(conn)
    finally:
        await conn.close()
    for version in applied:
        print(f"applied {version}")
    print(f"tgcrm db migrate: {len(applied)} applied" if applied else "tgcrm db migrate: up to date", file=sys.stderr)
    return 0
