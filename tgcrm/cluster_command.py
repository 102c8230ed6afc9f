"""`tgcrm cluster --instances k`: k crm_server instances on one PostgreSQL store, for trying several instances
locally: any instance answers any request (requests for another's accounts are forwarded), a killed one's accounts
move to the others after the lease TTL, a stopped one's at once.

PostgreSQL is the embedded one (or `--database-url`); crm_server's store is its database `crm_cluster`. The instances
share the session key, the cluster secret and (on the sandbox) one simulated Telegram, kept in the state folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
from pathlib import Path

from safeguards.private_files import make_private_dir, write_private_file
from tgcrm.command_line_settings import command_line_settings
from tgcrm.local_commands import port_is_busy, write_env_file
from tgcrm.stack import ChildService, LocalStack, RestartPolicy, StackError, Supervised, child_environment, \
    python_module, report

STORE_DATABASE = "crm_cluster"
SESSION_KEY_FILE = "crm_session.key"
CLUSTER_SECRET_FILE = "crm_cluster_secret"
ADMIN_KEY_FILE = "crm_admin_api_key"
MAX_INSTANCES = 16


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    defaults = command_line_settings()
    cluster = subparsers.add_parser(
        "cluster", help="run k crm_server instances on one PostgreSQL (several instances, tried locally)",
        description="Start PostgreSQL and k crm_server instances on consecutive ports from --crm-port, sharing one "
                    "store, and stay in the foreground until Ctrl-C. Any instance answers any request.")
    cluster.add_argument("--instances", type=int, default=2, help="how many crm_server instances (default 2)")
    cluster.add_argument("--host", default=defaults.host, help="address to listen on (default 127.0.0.1)")
    cluster.add_argument("--crm-port", type=int, default=defaults.crm_port,
                         help="the first instance's port; the others take the next ones (default 8090)")
    cluster.add_argument("--db-port", type=int, default=defaults.db_port,
                         help="embedded PostgreSQL port (default 54322)")
    cluster.add_argument("--database-url", default=None,
                         help="an existing PostgreSQL (admin URL) instead of the embedded one")
    cluster.add_argument("--state-dir", type=Path, default=Path(".local-cluster"),
                         help="where PostgreSQL's data, the keys and each instance's files live "
                              "(default .local-cluster)")
    cluster.add_argument("--sandbox", action=argparse.BooleanOptionalAction, default=True,
                         help="run on the offline Telegram sandbox (default; --no-sandbox needs TELEGRAM_API_*)")
    cluster.add_argument("--lease-ttl", type=float, default=15.0,
                         help="seconds a dead instance keeps its accounts (CRM_LEASE_TTL_SECONDS, default 15)")
    cluster.set_defaults(handler=run_cluster)


def run_cluster(args: argparse.Namespace) -> int:
    if not 1 <= args.instances <= MAX_INSTANCES:
        report(f"--instances must be 1..{MAX_INSTANCES}")
        return 1
    ports = [args.crm_port + number for number in range(args.instances)]
    if args.database_url is None:
        ports.append(args.db_port)
    for port in ports:
        if port_is_busy(args.host, port):
            report(f"port {port} on {args.host} is busy; choose other ports with --crm-port / --db-port")
            return 1
    return asyncio.run(ClusterCommand(args).run())


class ClusterCommand:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_dir: Path = args.state_dir.resolve()
        self.stop = asyncio.Event()

    async def run(self) -> int:
        from supabase_local.database import LocalDatabase

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        make_private_dir(self.state_dir)
        database = LocalDatabase(self.state_dir, port=self.args.db_port, database_url=self.args.database_url)
        stack: LocalStack | None = None
        try:
            await asyncio.to_thread(database.start)
            store_url = await _store_database(database.admin_url)
            stack = await self._start(database, store_url)
            await stack.supervise(self.stop)
            return 0
        except StackError as exc:
            report(str(exc))
            return 1
        finally:
            report("stopping…")
            if stack is not None:
                await stack.stop()
            else:
                await asyncio.to_thread(database.stop)
            report("stopped")

    async def _start(self, database: object, store_url: str) -> LocalStack:
        args = self.args
        session_key = _kept_secret(self.state_dir / SESSION_KEY_FILE, _fernet_key)
        cluster_secret = _kept_secret(self.state_dir / CLUSTER_SECRET_FILE, lambda: secrets.token_urlsafe(32))
        admin_key = await _admin_key(store_url, session_key, self.state_dir / ADMIN_KEY_FILE)
        client_host = "127.0.0.1" if args.host in ("0.0.0.0", "", "::") else args.host
        urls = [f"http://{client_host}:{args.crm_port + number}" for number in range(args.instances)]
        services = []
        for number, url in enumerate(urls):
            env = child_environment(
                CRM_DATABASE_URL=store_url,
                CRM_SESSION_KEY=session_key,
                CRM_CLUSTER_SECRET=cluster_secret,
                CRM_INSTANCE_URL=url,
                CRM_LEASE_TTL_SECONDS=str(args.lease_ttl),
                CRM_SANDBOX_WORLD=str(self.state_dir / "sandbox_world.sqlite3"),
            )
            argv = python_module("crm_server", "server", "--host", args.host, "--port", str(args.crm_port + number),
                                 "--state-dir", str(self.state_dir / f"instance-{number}"),
                                 *(["--sandbox"] if args.sandbox else []))
            child = ChildService(f"crm_server-{number}", argv, env, hidden_values=lambda: (admin_key, cluster_secret))
            services.append(Supervised(child, [(f"{url}/health", {})]))
        stack = LocalStack(database, services=services, restart_policy=RestartPolicy.from_environment())
        await stack.start()
        values = {"CRM_URLS": ",".join(urls), "CRM_URL": urls[0], "CRM_API_KEY": admin_key,
                  "CRM_DATABASE_URL": store_url, "CRM_SANDBOX": "1" if args.sandbox else "0"}
        write_env_file(self.state_dir, values)
        for name, value in values.items():
            print(f"{name}={value}")
        print("READY", flush=True)
        return stack


async def _store_database(admin_url: str) -> str:
    """crm_server's store: the database `crm_cluster` on this PostgreSQL, made when missing; its asyncpg URL."""
    import asyncpg

    connection = await asyncpg.connect(admin_url)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", STORE_DATABASE):
            await connection.execute(f'CREATE DATABASE "{STORE_DATABASE}"')
    finally:
        await connection.close()
    base, _, _ = admin_url.partition("?")
    base = base.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{STORE_DATABASE}"


async def _admin_key(store_url: str, session_key: str, path: Path) -> str:
    """The admin key kept in the state folder while the store knows it; a new one otherwise."""
    from crm_server.store import Store

    store = await Store.open(store_url, session_key.encode())
    try:
        if path.exists():
            saved = path.read_text().strip()
            principal = await store.api_keys.authenticate(saved) if saved else None
            if principal is not None and principal.project_id is None:
                return saved
        key = await store.api_keys.create(None)
        write_private_file(path, key)
        return key
    finally:
        with contextlib.suppress(Exception):
            await store.close()


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _kept_secret(path: Path, make: object) -> str:
    if path.exists():
        return path.read_text().strip()
    value = make()  # type: ignore[operator]
    write_private_file(path, value)
    return value  # type: ignore[no-any-return]
