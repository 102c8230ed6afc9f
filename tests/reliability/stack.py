"""The whole stack as separate processes a reliability test can stop, kill and restart: embedded PostgreSQL (its
own cluster), the API process (REST + functions, `python -m tgcrm serve-api`) and crm_server on the sandbox.

Plus what every fault test repeats: organizations with a signed-in user, a connected and logged-in account, bursts
of incoming messages through the sandbox, and reading the sandbox world's own record of what Telegram carried.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cryptography.fernet import Fernet

from supabase_local.database import LocalDatabase
from supabase_local.keys import LocalKeys, local_keys, user_token
from tests.crm_server.server_process import LOGIN_CODE, CrmServerProcess, hermetic_env, new_phone
from tests.helpers.net import free_port, wait_http

# Fast retries and short leases, so a recovered receiver or a restarted server catches up within seconds; pacing
# out of the way, because the tests send far more than an operator would allow one account.
CRM_ENV = {
    "CRM_ALLOW_PRIVATE_WEBHOOKS": "1",
    "CRM_WEBHOOK_RETRY_FIRST_SECONDS": "0.2",
    "CRM_WEBHOOK_RETRY_MAX_SECONDS": "1.0",
    "CRM_WEBHOOK_LEASE_SECONDS": "2",
    "CRM_LEASE_TTL_SECONDS": "3",
    "CRM_SEND_BURST": "100000",
    "CRM_SEND_RATE_PER_MINUTE": "1000000",
}


class ApiProcess:
    """`python -m tgcrm serve-api`: the REST gateway and the functions in one process, on a port that survives
    restarts (crm_server keeps posting webhooks to the same URL)."""

    def __init__(self, state_dir: Path, env: dict[str, str], *, log_level: str = "warning") -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_level = log_level
        self.log_path = state_dir / f"api-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ApiProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {name: value for name, value in hermetic_env().items()
               if not name.startswith(("SUPABASE_", "FUNCTIONS_", "WAPPI_", "WEBHOOK_"))}
        env.update(self.env, SUPABASE_URL=self.url, FUNCTIONS_PUBLIC_URL=self.url)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tgcrm", "serve-api", "--port", str(self.port), "--log-level", self.log_level],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.state_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API process exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"the API process did not answer within {timeout}s:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(frozen=True)
class Tenant:
    """An organization with one signed-in member: what the CRM's browser holds."""

    organization_id: str
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Account:
    """A Telegram account connected as a telegram_crm integration and logged in on crm_server."""

    tenant: Tenant
    phone: str
    integration_id: str
    webhook_url: str


@dataclass
class ReliabilityStack:
    state_dir: Path
    database: LocalDatabase
    keys: LocalKeys
    api: ApiProcess
    crm: CrmServerProcess
    admin_dsn: str
    settings_key: str  # FUNCTIONS_SETTINGS_KEY: integration secrets are sealed with it in the database
    pool: asyncpg.Pool | None = None
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    # --- processes ------------------------------------------------------------------------------------------------

    def ensure_running(self) -> None:
        """Bring back whatever a previous (failed) test left stopped."""
        assert self.database.server is not None
        if not self.database.server.is_running():
            self.database.server.start()
        if not self.api.running:
            self.api.start()
        if self.crm.process is None or self.crm.process.poll() is not None:
            self.crm.start()

    def restart_crm(self) -> None:
        self.crm.stop()
        self.crm.start()

    @property
    def functions_url(self) -> str:
        return f"{self.api.url}/functions/v1"

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=64))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    async def db(self) -> asyncpg.Pool:
        """A small superuser pool for arranging rows and counting what was stored (survives a PostgreSQL
        restart: asyncpg replaces broken connections on acquire)."""
        if self.pool is None:
            self.pool = await asyncpg.create_pool(self.admin_dsn, min_size=1, max_size=4)
        return self.pool

    # --- crm_server ------------------------------------------------------------------------------------------------

    async def crm_call(self, method: str, path: str, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"X-API-Key": key or self.crm.admin_key or "", **kwargs.pop("headers", {})}
        return await self.http.request(method, f"{self.crm.url}{path}", headers=headers, **kwargs)

    async def crm_ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.crm_call(method, path, **kwargs)
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()

    async def failed_deliveries(self) -> float:
        """Webhook posts crm_server (this run of it) will retry: the receiver was down or answered 5xx."""
        text = (await self.crm_call("GET", "/metrics")).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith('crm_webhook_deliveries_total{outcome="retry"}'))

    async def outbox_pending(self) -> int:
        return int((await self.crm_call("GET", "/health")).json()["outbox_pending"])  # counts: the admin's

    async def sandbox_user(self, **fields: Any) -> tuple[int, str]:
        """A simulated Telegram user: (user id, phone)."""
        phone = new_phone()
        answer = await self.crm_ok("POST", "/sandbox/users",
                                   json={"phone": phone, "username": f"u{phone[1:]}", **fields})
        return int(answer["user_id"]), phone

    async def client_who_wrote(self, tenant: Tenant, account_phone: str, text: str, *, timeout: float,
                               **user_fields: Any) -> tuple[int, str, str]:
        """A simulated user writes `text` to the account and the CRM stores it: (user id, user phone, client id)."""
        user_id, user_phone = await self.sandbox_user(**user_fields)
        await self.crm_ok("POST", "/sandbox/incoming", json={"account_phone": account_phone, "from": user_phone,
                                                              "text": text})
        assert await self.wait_for_incoming(tenant.organization_id, 1, timeout=timeout) == 1
        pool = await self.db()
        client_id = await pool.fetchval("SELECT id FROM clients WHERE organization_id = $1", tenant.organization_id)
        return user_id, user_phone, str(client_id)

    def project_key(self, project_id: str) -> str:
        from tests.crm_server.server_process import run_cli

        return run_cli("keys", "create", "--project", project_id, state_dir=self.crm.state_dir,
                       env=self.crm.env).strip()

    # --- tenants and accounts -------------------------------------------------------------------------------------

    async def tenant(self, name: str = "Org") -> Tenant:
        organization_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        pool = await self.db()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("INSERT INTO organizations (id, name) VALUES ($1, $2)", organization_id,
                                     f"{name} {organization_id[:8]}")
            await connection.execute("INSERT INTO auth.users (id, email) VALUES ($1, $2)", user_id,
                                     f"{user_id}@reliability.test")
            await connection.execute("INSERT INTO profiles (id, organization_id, full_name) VALUES ($1, $2, $3)",
                                     user_id, organization_id, f"{name} manager")
        return Tenant(organization_id, user_id, user_token(user_id, self.keys.jwt_secret))

    async def connect_account(self, tenant: Tenant, *, crm_key: str | None = None, phone: str | None = None,
                              password: str | None = None) -> Account:
        """telegram-crm-connect, then the account's login through crm_server's auth routes (code, 2FA)."""
        phone = phone or new_phone()
        key = crm_key or self.crm.admin_key
        response = await self.http.post(f"{self.functions_url}/telegram-crm-connect", headers=tenant.auth, json={
            "crmApiUrl": self.crm.url, "crmApiKey": key, "crmPhoneNumber": phone})
        assert response.status_code == 200, response.text
        connected = response.json()
        project = tenant.organization_id
        if password is not None:
            await self.crm_ok("POST", "/sandbox/accounts", json={"phone": phone, "password": password})
        await self.crm_ok("POST", "/telegram/auth/send-code", key=key, json={"project_id": project, "phone": phone})
        signed = await self.crm_ok("POST", "/telegram/auth/sign-in", key=key,
                                   json={"project_id": project, "phone": phone, "code": LOGIN_CODE})
        if password is not None:
            assert signed == {"status": "password_required"}
            await self.crm_ok("POST", "/telegram/auth/password", key=key,
                              json={"project_id": project, "phone": phone, "password": password})
        else:
            assert signed == {"status": "authorized"}
        return Account(tenant, phone, connected["integrationId"], connected["webhookUrl"])

    async def integration_secret(self, integration_id: str) -> tuple[str, str]:
        """(webhook key, webhook secret) of an integration, as only the server side can read them."""
        from functions._shared.sealed_settings import SettingsSealer

        pool = await self.db()
        row = await pool.fetchrow("SELECT webhook_key, settings FROM messenger_integrations WHERE id = $1",
                                  integration_id)
        assert row is not None
        settings = SettingsSealer(self.settings_key).open(json.loads(row["settings"]))
        return row["webhook_key"], settings["secret"]

    # --- what the database and the sandbox world hold -------------------------------------------------------------

    async def incoming_rows(self, organization_id: str) -> list[asyncpg.Record]:
        pool = await self.db()
        return await pool.fetch(
            "SELECT external_message_id, message_text FROM chat_messages WHERE organization_id = $1 "
            "AND NOT is_outgoing", organization_id)

    async def wait_for_incoming(self, organization_id: str, expected: int, timeout: float) -> int:
        """Until `expected` incoming rows are stored (then a moment more, so late duplicates would show)."""
        deadline = time.monotonic() + timeout
        pool = await self.db()
        stored = 0
        while time.monotonic() < deadline:
            try:
                stored = int(await pool.fetchval(
                    "SELECT count(*) FROM chat_messages WHERE organization_id = $1 AND NOT is_outgoing",
                    organization_id))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                stored = -1  # PostgreSQL is restarting
            if stored >= expected:
                await asyncio.sleep(1.0)
                return stored
            await asyncio.sleep(0.25)
        return stored

    def world(self) -> SandboxWorldFile:
        return SandboxWorldFile(self.crm.state_dir / "sandbox_world.sqlite3")


class SandboxWorldFile:
    """Read-only look at the sandbox's SQLite file: the messages Telegram really carried (what was "sent")."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def account_id(self, phone: str) -> int:
        rows = self._query("SELECT id FROM users WHERE phone = ?", (phone.lstrip("+"),))
        assert rows, f"no sandbox account {phone}"
        return int(rows[0][0])

    def received(self, phone: str) -> list[tuple[int, str]]:
        """(message id, text) of every message the account received, in the account's own log."""
        return [(int(message_id), text) for message_id, text in self._query(
            "SELECT id, text FROM messages WHERE account_id = ? AND out = 0 ORDER BY id", (self.account_id(phone),))]

    def sent(self, phone: str) -> list[tuple[int, str]]:
        return [(int(message_id), text) for message_id, text in self._query(
            "SELECT id, text FROM messages WHERE account_id = ? AND out = 1 ORDER BY id", (self.account_id(phone),))]


# --- bursts of incoming messages ----------------------------------------------------------------------------------

@dataclass
class Burst:
    """What a burst posted: `texts[i]` went in (or, when `uncertain`, may have gone in before a crash)."""

    texts: list[str]
    posted: set[int] = field(default_factory=set)
    uncertain: set[int] = field(default_factory=set)


async def incoming_burst(stack: ReliabilityStack, account: Account, senders: list[str], count: int, *,
                         tag: str, concurrency: int = 8,
                         on_progress: Callable[[int], Awaitable[None]] | None = None,
                         progress_marks: Iterable[int] = ()) -> Burst:
    """`count` messages from `senders` (round robin: chat i % len) to the account through /sandbox/incoming.

    `on_progress(n)` runs (awaited, holding back further posts) when n messages have been posted, for each n in
    `progress_marks`: that is where a test injects its fault. A post that fails in transit is retried once the
    server answers again, unless the world shows it arrived (a crash after the world stored it).
    """
    burst = Burst(texts=[f"{tag} #{index} from chat {index % len(senders)}" for index in range(count)])
    marks = sorted(set(progress_marks))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)
    fault = asyncio.Lock()
    done = 0

    async def post(index: int) -> None:
        nonlocal done
        body = {"account_phone": account.phone, "from": senders[index % len(senders)], "text": burst.texts[index]}
        while True:
            try:
                response = await stack.crm_call("POST", "/sandbox/incoming", json=body, timeout=10.0)
            except httpx.HTTPError:
                # The server died under us (or is restarting): did the world take the message before it went?
                burst.uncertain.add(index)
                await _wait_crm(stack)
                if any(text == burst.texts[index] for _, text in stack.world().received(account.phone)):
                    break
                continue
            if response.status_code == 200:
                break
            assert response.status_code in (502, 503), response.text  # not ready yet after a restart
            await asyncio.sleep(0.2)
        burst.posted.add(index)
        done += 1

    async def worker() -> None:
        while True:
            async with fault:
                pass  # a fault in progress holds everyone back
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await post(index)
            if marks and done >= marks[0] and on_progress is not None:
                async with fault:
                    if marks and done >= marks[0]:
                        await on_progress(marks.pop(0))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return burst


async def _wait_crm(stack: ReliabilityStack, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = await stack.http.get(f"{stack.crm.url}/health", timeout=1.0)
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("crm_server did not come back")


def start_reliability_stack(state_dir: Path, *, crm_env: dict[str, str] | None = None,
                            api_log_level: str = "warning", database: LocalDatabase | None = None) -> ReliabilityStack:
    """PostgreSQL (own cluster unless given), the API process and crm_server, all started and answering."""
    own_database = database is None
    if database is None:
        database = LocalDatabase(state_dir / "db", port=free_port(), durable=False)
        database.start()
        asyncio.run(database.prepare(seed=True))
    keys = local_keys(state_dir / "db")
    urls = database.urls()
    settings_key = Fernet.generate_key().decode()
    crm = CrmServerProcess(state_dir / "crm", env={**CRM_ENV, **(crm_env or {})}, name="reliability")
    api: ApiProcess | None = None
    try:
        crm.start()
        assert crm.admin_key is not None
        # The sandbox server and its admin key, as `tgcrm up` gives them: telegram-crm-sandbox is live too.
        api = ApiProcess(state_dir / "api", {
            "SUPABASE_SERVICE_ROLE_KEY": keys.service_role_key, "SUPABASE_ANON_KEY": keys.anon_key,
            "SUPABASE_JWT_SECRET": keys.jwt_secret, "TGCRM_REST_DATABASE_URL": urls.authenticator,
            "TGCRM_AUTH_DATABASE_URL": urls.auth_admin, "TGCRM_STORAGE_DIR": str(state_dir / "storage"),
            "CRM_ALLOW_HTTP_LOOPBACK": "1", "FUNCTIONS_SETTINGS_KEY": settings_key,
            "CRM_SANDBOX_URL": crm.url, "CRM_SANDBOX_API_KEY": crm.admin_key}, log_level=api_log_level)
        api.start()
    except BaseException:
        if api is not None:
            api.stop()
        crm.stop()
        if own_database:
            database.stop()
        raise
    wait_http(f"{api.url}/health", expect_status=200)
    return ReliabilityStack(state_dir=state_dir, database=database, keys=keys, api=api, crm=crm,
                            admin_dsn=urls.admin, settings_key=settings_key)


def stop_reliability_stack(stack: ReliabilityStack, *, stop_database: bool = True) -> None:
    stack.crm.stop()
    stack.api.stop()
    if stop_database:
        stack.database.stop()
