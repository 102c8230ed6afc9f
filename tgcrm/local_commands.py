"""`tgcrm db up` (PostgreSQL + migrations + REST + auth), `db migrate` (db_migrate.py) and `token` (a local user
JWT).

`db up` and `token` read the same state folder, so the keys `db up` prints and the tokens `token` mints agree.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import socket
import sys
from pathlib import Path

from tgcrm import db_migrate
from tgcrm.command_line_settings import command_line_settings

def add_stack_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that starts part of the local stack."""
    defaults = command_line_settings()
    parser.add_argument("--host", default=defaults.host,
                        help="address to listen on (default 127.0.0.1; env TGCRM_HOST)")
    parser.add_argument("--api-port", type=int, default=defaults.api_port,
                        help="Supabase-compatible API port (default 54321; env TGCRM_API_PORT)")
    parser.add_argument("--db-port", type=int, default=defaults.db_port,
                        help="embedded PostgreSQL port (default 54322; env TGCRM_DB_PORT)")
    parser.add_argument("--state-dir", type=Path, default=defaults.state_dir,
                        help="where data, keys and logs live (default .local; env TGCRM_STATE_DIR)")
    parser.add_argument("--fresh", action="store_true", help="delete the state folder first and start empty")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="the local Supabase database and REST API")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    up = db_commands.add_parser("up", help="start PostgreSQL, apply migrations and seed, serve /rest/v1, /auth/v1 "
                                           "and /storage/v1")
    add_stack_options(up)
    up.set_defaults(handler=run_db_up)
    db_migrate.add_command(db_commands)

    token = subparsers.add_parser("token", help="print a user JWT signed with the local project's secret")
    token.add_argument("--user", required=True, help="the auth user's uuid")
    token.add_argument("--lifetime", type=int, default=24 * 3600, help="seconds until it expires (default 1 day)")
    token.add_argument("--state-dir", type=Path,
                       default=command_line_settings().state_dir)
    token.set_defaults(handler=run_token)


def run_token(args: argparse.Namespace) -> int:
    from supabase_local.keys import load_or_create_secret, user_token

    secret = command_line_settings().jwt_secret or load_or_create_secret(args.state_dir)
    try:
        print(user_token(args.user, secret, lifetime=args.lifetime))
    except ValueError:
        print(f"tgcrm token: --user must be a uuid, got {args.user!r}", file=sys.stderr)
        return 2
    return 0


def port_is_busy(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


def write_env_file(state_dir: Path, values: dict[str, str]) -> None:
    """The same NAME=value lines we print, so `set -a; . .local/env` gives a shell the stack's settings."""
    from safeguards.private_files import write_private_file

    write_private_file(state_dir / "env", "".join(f"{name}={value}\n" for name, value in values.items()))


def run_db_up(args: argparse.Namespace) -> int:
    from safeguards.private_files import make_private_dir
    from supabase_local.database import LocalDatabase
    from supabase_local.postgres import PostgresError

    if args.fresh and args.state_dir.exists():
        shutil.rmtree(args.state_dir)
    make_private_dir(args.state_dir)
    if port_is_busy(args.host, args.api_port):
        print(f"tgcrm: port {args.api_port} is busy; choose another with --api-port", file=sys.stderr)
        return 1
    database = LocalDatabase(args.state_dir, port=args.db_port, database_url=command_line_settings().database_url)
    try:
        database.start()
    except PostgresError as exc:
        print(f"tgcrm: {exc}", file=sys.stderr)
        return 1
    # uvicorn handles SIGTERM itself, then raises it again once shut down; left to the default action, that would
    # end this process before `database.stop()` and leave PostgreSQL running. Turned into SystemExit, cleanup runs.
    signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        asyncio.run(_serve_api(args, database))
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        database.stop()
    return 0


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


async def _serve_api(args: argparse.Namespace, database: "LocalDatabase") -> None:  # noqa: F821
    import uvicorn

    from safeguards.http_limits import RequestLimits, uvicorn_options
    from safeguards.logs import redact_query_strings
    from safeguards.proxies import uvicorn_proxy_options
    from safeguards.serving import start_serving
    from supabase_local.api import STORAGE_PREFIX, create_api_app
    from supabase_local.auth.app import create_auth_app
    from supabase_local.auth.config import auth_config
    from supabase_local.keys import local_keys
    from supabase_local.migrations import CONFIG_TOML
    from supabase_local.rest.app import create_rest_app
    from supabase_local.storage import create_storage_app

    await database.prepare(seed=True)
    keys = local_keys(args.state_dir)
    urls = database.urls()
    api_url = f"http://{args.host}:{args.api_port}"
    storage = create_storage_app(urls.authenticator, keys.jwt_secret, args.state_dir / "storage",
                                 max_upload_bytes=command_line_settings().storage_max_upload_bytes)
    app = create_api_app(create_rest_app(urls.authenticator, keys.jwt_secret), extra_mounts={STORAGE_PREFIX: storage},
                         api_keys=(keys.anon_key, keys.service_role_key),
                         auth_app=create_auth_app(auth_config(keys.jwt_secret, api_url, CONFIG_TOML),
                                                  urls.auth_admin))
    redact_query_strings()
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.api_port, log_level="warning",
                                           **uvicorn_options(RequestLimits()), **uvicorn_proxy_options(())))
    serving = await start_serving(server)
    if serving.done():
        await serving
        return
    values = {
        "SUPABASE_URL": api_url,
        "SUPABASE_ANON_KEY": keys.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": keys.service_role_key,
        "SUPABASE_JWT_SECRET": keys.jwt_secret,
        "DATABASE_URL": urls.admin,
    }
    write_env_file(args.state_dir, values)
    for name, value in values.items():
        print(f"{name}={value}")
    print("READY", flush=True)
    await serving
