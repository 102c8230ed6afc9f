"""The crm_server commands: `server`, `keys create`, `login`, registered on any argparse subparsers object.

`tgcrm` calls `add_commands(subparsers)`; `python -m crm_server` uses `main()` here. Each command sets `handler`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

from crm_server.settings import ServerSettings, existing_state_problem, load_session_key
from safeguards.private_files import make_private_dir, use_private_umask
from safeguards.serving import announce

SERVER_STATE_HELP = "state folder, created when missing (TGCRM_STATE_DIR, default .local)"
# `keys create` and `login` write into a server's state; they never make one.
EXISTING_STATE_HELP = ("the state folder of the crm_server to use, as `tgcrm up` or `tgcrm server` made it "
                       "(TGCRM_STATE_DIR, default .local in the current directory); refused if it is not one")


def add_commands(subparsers: Any) -> None:
    server = subparsers.add_parser("server", help="run crm_server (HTTP API + Telegram accounts)")
    server.add_argument("--sandbox", action="store_true", default=None, help="use the offline Telegram sandbox")
    server.add_argument("--state-dir", type=Path, help=SERVER_STATE_HELP)
    server.add_argument("--host", help="listen address (TGCRM_HOST, default 127.0.0.1)")
    server.add_argument("--port", type=int, help="listen port (TGCRM_CRM_PORT, default 8090)")
    server.add_argument("--log-payloads", action="store_true", default=None,
                        help="let DEBUG logs carry message texts and phones (CRM_LOG_PAYLOADS; off by default)")
    server.set_defaults(handler=server_command)

    keys = subparsers.add_parser("keys", help="crm_server API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create an API key and print it once")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--project", type=organization_id, metavar="ORGANIZATION_ID",
                       help="the project the key is bound to: an organization id (a UUID)")
    scope.add_argument("--admin", action="store_true", help="a key for every project")
    create.add_argument("--state-dir", type=Path, help=EXISTING_STATE_HELP)
    create.set_defaults(handler=keys_create_command)

    login = subparsers.add_parser("login", help="log a Telegram account in, interactively (code, then 2FA)")
    login.add_argument("--project", required=True, type=organization_id, metavar="ORGANIZATION_ID",
                       help="the project the account belongs to: an organization id (a UUID)")
    login.add_argument("--phone", required=True, help="the account's phone, +…")
    login.add_argument("--sandbox", action="store_true", default=None, help="log in to the offline sandbox")
    login.add_argument("--state-dir", type=Path, help=EXISTING_STATE_HELP)
    login.set_defaults(handler=login_command)


def organization_id(value: str) -> str:
    """`--project`: projects are the CRM's organizations, whose ids are UUIDs. The canonical form is the one requests
    carry (PostgreSQL's), so a key bound to `ABC…` or `{abc…}` matches them too."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an organization id (a UUID), got {value!r}") from None


def settings_from(args: argparse.Namespace) -> ServerSettings:
    """Environment (and .env) first, then the command line's explicit flags on top."""
    overrides: dict[str, Any] = {}
    for flag, name in (("sandbox", "sandbox"), ("host", "host"), ("port", "port"), ("state_dir", "state_dir"),
                       ("log_payloads", "log_payloads")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[name] = value
    return ServerSettings(**overrides)


def configure_logging(level: str, log_payloads: bool = False) -> None:
    from safeguards.logs import configure_logging as configure

    configure(level, log_payloads=log_payloads)
    # Telethon is chatty at INFO (one line per connection); its warnings still show.
    logging.getLogger("telethon").setLevel(max(logging.WARNING, logging.getLogger().level))


# --- server ------------------------------------------------------------------------------------


def server_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    configure_logging(settings.log_level, settings.log_payloads)
    try:
        settings.telegram_credentials()
        settings.telegram_dc_address()
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings))


async def serve(settings: ServerSettings) -> int:
    import uvicorn

    from crm_server.app import create_app
    from crm_server.store import Store
    from safeguards.http_limits import RequestLimits, uvicorn_options
    from safeguards.proxies import parse_trusted_proxies, uvicorn_proxy_options
    from safeguards.serving import serve_announcing_ready
    from safeguards.task_dump import install_task_dump

    install_task_dump()  # `kill -USR1 <pid>`: where each task waits, e.g. when a stop hangs
    make_private_dir(settings.state_dir)
    store = await Store.open(settings.resolved_database_url, load_session_key(settings))
    try:
        admin_key = None if await store.api_keys.has_admin_key() else await store.api_keys.create(None)
    finally:
        await store.close()

    announce(f"CRM_URL={settings.public_url}")
    if admin_key is not None:
        # Printed once, on the first start: only its hash is stored.
        announce(f"CRM_API_KEY={admin_key}")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        log_config=None,  # keep our logging setup
        **uvicorn_options(RequestLimits(header_timeout_seconds=settings.http_header_timeout_seconds,
                                        body_idle_timeout_seconds=settings.http_body_idle_timeout_seconds)),
        **uvicorn_proxy_options(parse_trusted_proxies(settings.trusted_proxies)),
    )
    return await serve_announcing_ready(uvicorn.Server(config))


# --- keys --------------------------------------------------------------------------------------


def keys_create_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    problem = existing_state_problem(settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    project_id = None if args.admin else args.project
    print(asyncio.run(create_key(settings, project_id)))
    return 0


async def create_key(settings: ServerSettings, project_id: str | None) -> str:
    from crm_server.store import Store

    store = await Store.open(settings.resolved_database_url, load_session_key(settings))
    try:
        return await store.api_keys.create(project_id)
    finally:
        await store.close()


# --- login -------------------------------------------------------------------------------------


def login_command(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    problem = existing_state_problem(settings, sandbox_world=settings.sandbox)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    configure_logging("warning")
    try:
        settings.telegram_credentials()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(interactive_login(settings, args.project, args.phone))


async def interactive_login(settings: ServerSettings, project_id: str, phone: str) -> int:
    from crm_server import errors
    from crm_server.telegram.recipients import normalize_phone
    from crm_server.store import Store
    from crm_server.telegram.manager import AccountManager

    try:
        phone = normalize_phone(phone)
    except ValueError as exc:
        print(f"error: --phone {exc}", file=sys.stderr)
        return 2
    store = await Store.open(settings.resolved_database_url, load_session_key(settings))
    world = None
    if settings.sandbox:
        from crm_server.sandbox import SandboxWorld, install

        world = SandboxWorld(settings.resolved_sandbox_world)
        install(world)
    # No start(): this process only logs in; a running server picks the account up through its lease loop.
    manager = AccountManager(store, settings)
    try:
        await manager.send_code(project_id, phone)
        print(f"A login code was sent to {phone}.")
        outcome = None
        for _ in range(3):
            code = (await asyncio.to_thread(input, "Code: ")).strip()
            try:
                outcome = await manager.sign_in(project_id, phone, code)
                break
            except errors.InvalidCodeError as exc:
                print(exc.message)
        if outcome is None:
            return 1
        for _ in range(3):
            if outcome == "authorized":
                break
            password = await asyncio.to_thread(getpass.getpass, "2FA password: ")
            try:
                outcome = await manager.check_password(project_id, phone, password)
            except errors.PasswordInvalidError as exc:
                print(exc.message)
        if outcome != "authorized":
            return 1
        print(f"{phone} is logged in for project {project_id}.")
        return 0
    except errors.CrmError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await manager.stop()
        await store.close()
        if world is not None:
            from crm_server.sandbox import uninstall

            uninstall()
            world.close()


def main(argv: list[str] | None = None) -> int:
    # What the server (and `keys create`, `login`) creates in the state folder is this user's alone.
    use_private_umask()
    parser = argparse.ArgumentParser(prog="python -m crm_server", description="crm_server: Telegram accounts over HTTP")
    subparsers = parser.add_subparsers(dest="command")
    add_commands(subparsers)
    arguments = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(arguments or ["server"])
    return int(args.handler(args))
