"""`tgcrm up`: the whole local stack in the foreground — PostgreSQL, the API process (REST, functions, admin page)
and crm_server — with its URLs and keys printed as NAME=value lines and written to `<state-dir>/env`.

The processes themselves are supervised by `tgcrm.stack`; this module decides what runs, with which settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from typing import IO, TYPE_CHECKING

from safeguards.private_files import PRIVATE_DIR_MODE, make_private_dir, write_private_file
from tgcrm.command_line_settings import command_line_settings
from tgcrm.local_commands import add_stack_options, port_is_busy, write_env_file
from tgcrm.stack import (
    ChildService,
    LocalStack,
    RestartPolicy,
    StackError,
    Supervised,
    child_environment,
    python_module,
    report,
    state_files_present,
)

if TYPE_CHECKING:
    # For annotations only: at run time both are imported where they are used, so `tgcrm --help` stays light.
    from crm_server.store import Store
    from supabase_local.database import LocalDatabase

DEMO_ORGANIZATION_ID = "00000000-0000-4000-8000-000000000001"
DEMO_USER_ID = "00000000-0000-4000-8000-0000000000a1"
DEMO_USER_EMAIL = "admin@demo.local"
DEMO_TOKEN_LIFETIME = 7 * 24 * 3600
STATE_MARKER = ".tgcrm-state"
LOCK_FILE = "up.lock"
ADMIN_KEY_FILE = "crm_admin_api_key"
DEMO_KEY_FILE = "crm_demo_api_key"
FUNCTIONS_SETTINGS_KEY_FILE = "functions_settings.key"


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = subparsers.add_parser(
        "up", help="run the whole local stack: PostgreSQL, API (REST, functions, /admin) and crm_server",
        description="Start everything in one process tree and stay in the foreground until Ctrl-C. "
                    "Without TELEGRAM_API_ID/TELEGRAM_API_HASH crm_server runs on the offline Telegram sandbox.")
    add_stack_options(up)
    defaults = command_line_settings()
    up.add_argument("--crm-port", type=int, default=defaults.crm_port,
                    help="crm_server port (default 8090; env TGCRM_CRM_PORT)")
    up.add_argument("--sandbox", action=argparse.BooleanOptionalAction, default=None,
                    help="run crm_server on the offline Telegram sandbox (default: unless TELEGRAM_API_ID and "
                         "TELEGRAM_API_HASH are set)")
    up.add_argument("--database-url", default=defaults.up_database_url,
                    help="use this PostgreSQL instead of the embedded one (env TGCRM_DATABASE_URL)")
    up.add_argument("--log-level", default=defaults.log_level,
                    choices=["debug", "info", "warning", "error"],
                    help="log level of the services (default warning; env TGCRM_LOG_LEVEL)")
    up.add_argument("--log-payloads", action="store_true",
                    help="let the services' DEBUG logs carry message texts and phones (off by default: no log "
                         "holds a message text at any level)")
    up.set_defaults(handler=run_up)

    # Internal: the API process `up` starts (no help, so it is not listed).
    api = subparsers.add_parser("serve-api")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, required=True)
    api.add_argument("--log-level", default="warning")
    api.set_defaults(handler=run_serve_api)


def run_serve_api(args: argparse.Namespace) -> int:
    from tgcrm.api_process import serve_api

    return serve_api(args.host, args.port, args.log_level)


@dataclass(frozen=True)
class UpOptions:
    host: str
    api_port: int
    crm_port: int
    db_port: int
    state_dir: Path
    database_url: str | None
    sandbox: bool
    log_level: str
    log_payloads: bool = False

    @property
    def client_host(self) -> str:
        """The address clients use: a wildcard listen address is reached over loopback."""
        if self.host in ("0.0.0.0", "", "::"):
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def api_url(self) -> str:
        return f"http://{self.client_host}:{self.api_port}"

    @property
    def crm_url(self) -> str:
        return f"http://{self.client_host}:{self.crm_port}"


def run_up(args: argparse.Namespace) -> int:
    from crm_server.settings import ServerSettings

    # As crm_server itself reads them: the environment, then .env.
    telegram = ServerSettings()
    credentials = bool(telegram.telegram_api_id and telegram.telegram_api_hash)
    options = UpOptions(host=args.host, api_port=args.api_port, crm_port=args.crm_port, db_port=args.db_port,
                        state_dir=args.state_dir.resolve(), database_url=args.database_url,
                        sandbox=(not credentials) if args.sandbox is None else args.sandbox,
                        log_level=args.log_level, log_payloads=args.log_payloads)
    try:
        lock = claim_state_dir(options.state_dir, fresh=args.fresh)
    except StackError as exc:
        report(str(exc))
        return 1
    try:
        problem = port_problem(options)
        if problem:
            report(problem)
            return 1
        return asyncio.run(UpCommand(options).run())
    finally:
        lock.close()


def claim_state_dir(state_dir: Path, fresh: bool) -> IO[str]:
    """Lock the state folder for this `up` (two stacks on one folder would share one PostgreSQL data directory),
    emptying it first with `--fresh`."""
    if fresh and state_dir.exists() and any(state_dir.iterdir()) and not state_files_present(state_dir):
        raise StackError(f"--fresh would delete {state_dir}, which does not look like a tgcrm state folder; "
                         f"choose another --state-dir")
    make_private_dir(state_dir)
    if stat.S_IMODE(state_dir.stat().st_mode) & 0o077:
        # Made by an older version or by hand (or opened to PostgreSQL's own user by the last start as root, which
        # starting PostgreSQL does again): closed, so whatever it already holds is out of others' reach.
        state_dir.chmod(PRIVATE_DIR_MODE)
    lock = os.fdopen(os.open(state_dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise StackError(f"another `tgcrm up` is running on {state_dir}; stop it first or use another --state-dir")
    if fresh:
        for entry in state_dir.iterdir():
            if entry.name == LOCK_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        report(f"--fresh: emptied {state_dir}")
    (state_dir / STATE_MARKER).touch(mode=0o600)
    return lock


def port_problem(options: UpOptions) -> str | None:
    """A message naming the busy (or clashing) port and the flag that changes it, or None."""
    ports = [(options.api_port, "--api-port", "TGCRM_API_PORT", "the API"),
             (options.crm_port, "--crm-port", "TGCRM_CRM_PORT", "crm_server")]
    if options.database_url is None:
        ports.append((options.db_port, "--db-port", "TGCRM_DB_PORT", "PostgreSQL"))
    seen: dict[int, str] = {}
    for port, flag, env, what in ports:
        if port in seen:
            return f"{what} and {seen[port]} are both set to port {port}; change one with {flag} (or {env})"
        seen[port] = what
        if port_is_busy(options.client_host.strip("[]"), port):
            return (f"port {port} ({what}) on {options.host} is busy — is another stack running? "
                    f"Choose another port with {flag} (or {env})")
    return None


class UpCommand:
    def __init__(self, options: UpOptions) -> None:
        self.options = options
        self.stop = asyncio.Event()
        self._stack: LocalStack | None = None  # set as soon as children may exist, so a failed start stops them
        self._postgres_start: asyncio.Future[None] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)
        from supabase_local.database import LocalDatabase

        options = self.options
        database = LocalDatabase(options.state_dir, port=options.db_port, database_url=options.database_url)
        stack: LocalStack | None = None
        exit_code = 0
        try:
            starting = asyncio.create_task(self._start(database))
            stopping = asyncio.create_task(self.stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                report("stopping before the stack was ready")
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await starting
            else:
                stopping.cancel()
                stack = starting.result()
                await stack.supervise(self.stop)
        except StackError as exc:
            report(str(exc))
            exit_code = 1
        except Exception as exc:  # noqa: BLE001 - e.g. PostgresError: say what failed, then stop what runs
            report(f"{type(exc).__name__}: {exc}")
            exit_code = 1
        finally:
            report("stopping…")
            if self._postgres_start is not None:
                await asyncio.wait({self._postgres_start})
            stack = stack or self._stack
            if stack is not None:
                await stack.stop()
            else:
                await asyncio.to_thread(database.stop)
            report("stopped")
        return exit_code

    def _on_signal(self, signum: int) -> None:
        if not self.stop.is_set():
            report(f"{signal.Signals(signum).name} received")
        self.stop.set()

    async def _start(self, database: LocalDatabase) -> LocalStack:
        from supabase_local.keys import local_keys, user_token
        from tgcrm.demo_user import ensure_demo_password, load_or_create_password

        options = self.options
        restart_policy = RestartPolicy.from_environment()  # a bad TGCRM_RESTART_DELAY_* is named before anything runs
        # Not cancellable half-way: a Ctrl-C now lets PostgreSQL finish starting, then stops it.
        self._postgres_start = asyncio.ensure_future(asyncio.to_thread(database.start))
        await asyncio.shield(self._postgres_start)
        await database.prepare(seed=True)
        keys = local_keys(options.state_dir)
        urls = database.urls()
        demo_password = load_or_create_password(options.state_dir)
        await ensure_demo_password(database.admin_url, DEMO_USER_ID, demo_password)
        try:
            admin_key, demo_key = await ensure_crm_keys(options)
        except Exception as exc:  # noqa: BLE001 - a bad CRM_SESSION_KEY or CRM_DATABASE_URL: name the step
            raise StackError(f"could not open crm_server's store to prepare its API keys: "
                             f"{type(exc).__name__}: {exc}") from exc
        settings_key = ensure_functions_settings_key(options.state_dir)

        api_env = child_environment(
            SUPABASE_URL=options.api_url,
            SUPABASE_ANON_KEY=keys.anon_key,
            SUPABASE_SERVICE_ROLE_KEY=keys.service_role_key,
            SUPABASE_JWT_SECRET=keys.jwt_secret,
            FUNCTIONS_PUBLIC_URL=options.api_url,
            # Local mode: crm_server calls reach loopback only, and (unless the environment lists other servers)
            # only this stack's own crm_server.
            CRM_ALLOW_HTTP_LOOPBACK="1",
            FUNCTIONS_CRM_HOSTS=os.environ.get("FUNCTIONS_CRM_HOSTS")
            or f"{options.client_host}:{options.crm_port},localhost:{options.crm_port}",
            TGCRM_REST_DATABASE_URL=urls.authenticator,
            TGCRM_AUTH_DATABASE_URL=urls.auth_admin,
            TGCRM_STORAGE_DIR=str(options.state_dir / "storage"),
            TGCRM_LOCAL_DEMO_USER_ID=DEMO_USER_ID,
            TGCRM_LOCAL_DEMO_USER_EMAIL=DEMO_USER_EMAIL,
            TGCRM_LOCAL_CRM_URL=options.crm_url,
            TGCRM_LOCAL_CRM_API_KEY=demo_key,
            # The local stack always seals integration secrets, like a configured production host.
            FUNCTIONS_SETTINGS_KEY=settings_key,
        )
        for name in ("SUPABASE_JWKS_URL", "CRM_SANDBOX_URL", "CRM_SANDBOX_API_KEY"):
            api_env.pop(name, None)
        if options.sandbox:
            api_env.update(CRM_SANDBOX_URL=options.crm_url, CRM_SANDBOX_API_KEY=admin_key)
        crm_env = child_environment(
            CRM_SANDBOX="1" if options.sandbox else "0",
            # Webhooks go to the local API on loopback: that one address, not every private one (the metadata
            # address, the database, other local services stay refused).
            CRM_PRIVATE_WEBHOOK_HOSTS=_host_port(options.api_url),
            # Outgoing files come from the local Storage's signed URLs on that same address, and from nowhere
            # else private.
            CRM_PRIVATE_MEDIA_HOSTS=_host_port(options.api_url),
            CRM_LOG_LEVEL=options.log_level,
            CRM_LOG_PAYLOADS="1" if options.log_payloads else "0",
        )
        secrets = (keys.jwt_secret, keys.service_role_key, admin_key, demo_key, settings_key, demo_password)
        api = ChildService("api", python_module("tgcrm", "serve-api", "--host", options.host, "--port",
                                                str(options.api_port), "--log-level", options.log_level),
                           api_env, hidden_values=lambda: secrets)
        crm_args = ["server", "--host", options.host, "--port", str(options.crm_port),
                    "--state-dir", str(options.state_dir)]
        crm = ChildService("crm_server", python_module("crm_server", *crm_args, *(["--sandbox"] if options.sandbox
                                                                                  else [])),
                           crm_env, hidden_values=lambda: secrets)
        service_headers = {"apikey": keys.service_role_key, "Authorization": f"Bearer {keys.service_role_key}"}
        stack = LocalStack(database, restart_policy=restart_policy, services=[
            Supervised(crm, [(f"{options.crm_url}/health", {}),
                             (f"{options.crm_url}/telegram/status?project_id={DEMO_ORGANIZATION_ID}",
                              {"X-API-Key": admin_key})]),
            Supervised(api, [(f"{options.api_url}/health", {}),
                             (f"{options.api_url}/rest/v1/organizations?select=id&limit=1", service_headers),
                             (f"{options.api_url}/auth/v1/health", {"apikey": keys.anon_key}),
                             (f"{options.api_url}/functions/v1/telegram-providers", {}),
                             (f"{options.api_url}/admin/", {})]),
        ])
        self._stack = stack
        await stack.start()
        if options.sandbox:
            await seed_sandbox_users(database.admin_url, options.crm_url, admin_key)

        values = {
            "SUPABASE_URL": options.api_url,
            "SUPABASE_ANON_KEY": keys.anon_key,
            "SUPABASE_SERVICE_ROLE_KEY": keys.service_role_key,
            "SUPABASE_JWT_SECRET": keys.jwt_secret,
            "DATABASE_URL": urls.admin,
            "DEMO_USER_ID": DEMO_USER_ID,
            "DEMO_USER_EMAIL": DEMO_USER_EMAIL,
            "DEMO_USER_PASSWORD": demo_password,
            "DEMO_USER_JWT": user_token(DEMO_USER_ID, keys.jwt_secret, lifetime=DEMO_TOKEN_LIFETIME,
                                        email=DEMO_USER_EMAIL),
            "DEMO_ORGANIZATION_ID": DEMO_ORGANIZATION_ID,
            "CRM_URL": options.crm_url,
            "CRM_API_KEY": admin_key,
            "CRM_DEMO_API_KEY": demo_key,
            "CRM_SANDBOX": "1" if options.sandbox else "0",
            "ADMIN_URL": f"{options.api_url}/admin/",
        }
        write_env_file(options.state_dir, values)
        for name, value in values.items():
            print(f"{name}={value}")
        print("READY", flush=True)
        mode = "the offline Telegram sandbox (login code 12345)" if options.sandbox else "real Telegram"
        report(f"ready: admin page {options.api_url}/admin/ · crm_server on {mode} · Ctrl-C stops everything")
        return stack


async def seed_sandbox_users(database_url: str, crm_url: str, admin_key: str) -> None:
    """The seed's demo clients become simulated users of the sandbox (before READY, so a reply to one works from
    the first moment); a failure is reported and the stack runs on."""
    from tgcrm.demo_clients import create_sandbox_users, load_demo_clients

    try:
        clients = await load_demo_clients(database_url)
    except Exception as exc:  # noqa: BLE001 - asyncpg's or OSError: a warning, not a reason to stop
        report(f"could not read the demo clients to make them sandbox users: {type(exc).__name__}: {exc}")
        return
    for problem in await create_sandbox_users(crm_url, admin_key, clients):
        report(problem)


def ensure_functions_settings_key(state_dir: Path) -> str:
    """The Fernet key the functions seal integration secrets with: FUNCTIONS_SETTINGS_KEY when the environment sets
    one (e.g. with --database-url, to read rows another host sealed), else `<state-dir>/functions_settings.key`,
    created (0600) on the first start. It lives beside the database whose rows it opens: `--fresh` replaces both."""
    from cryptography.fernet import Fernet

    configured = os.environ.get("FUNCTIONS_SETTINGS_KEY", "").strip()
    path = state_dir / FUNCTIONS_SETTINGS_KEY_FILE
    if configured:
        key, source = configured, "FUNCTIONS_SETTINGS_KEY"
    else:
        try:
            # O_EXCL: written once, never overwritten (a new key would make every sealed row unreadable).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_text().strip()
        else:
            key = Fernet.generate_key().decode()
            with os.fdopen(fd, "w") as handle:
                handle.write(key)
        source = str(path)
    try:
        Fernet(key)
    except ValueError:
        raise StackError(f"{source} does not hold a Fernet key (32 url-safe base64-encoded bytes)") from None
    return key


async def ensure_crm_keys(options: UpOptions) -> tuple[str, str]:
    """crm_server's admin key and a key for the demo organization: kept in the state folder (0600) while the store
    still knows them, created otherwise (e.g. on the first start, or after its database was replaced)."""
    from crm_server.settings import ServerSettings, load_session_key
    from crm_server.store import Store

    settings = ServerSettings(state_dir=options.state_dir, sandbox=options.sandbox, host=options.host,
                              port=options.crm_port)
    store = await Store.open(settings.resolved_database_url, load_session_key(settings))
    try:
        admin_key = await _saved_or_new_key(store, options.state_dir / ADMIN_KEY_FILE, None)
        demo_key = await _saved_or_new_key(store, options.state_dir / DEMO_KEY_FILE, DEMO_ORGANIZATION_ID)
    finally:
        await store.close()
    return admin_key, demo_key


async def _saved_or_new_key(store: Store, path: Path, project_id: str | None) -> str:
    api_keys = store.api_keys
    if path.exists():
        saved = path.read_text().strip()
        principal = await api_keys.authenticate(saved) if saved else None
        if principal is not None and principal.project_id == project_id:
            return saved
    key = await api_keys.create(project_id)
    write_private_file(path, key)
    return key


def _host_port(url: str) -> str:
    """`host:port` of a URL, as CRM_PRIVATE_WEBHOOK_HOSTS lists it."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
