"""The running stack the function tests share: the REST gateway (from tests/conftest.py), the functions host on its
own uvicorn thread, crm_server as a sandbox subprocess, and the Wappi stand-in — all on loopback sockets.

Each test makes its own organizations, phones and clients, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet

from functions._shared import signature
from functions._shared.sealed_settings import SettingsSealer
from functions._shared.settings import FunctionsSettings
from functions.host import create_standalone_app
from supabase_local.keys import user_token
from tests.crm_server.server_process import CrmClient, CrmServerProcess, new_phone
from tests.helpers.net import free_port, wait_http
from tests.helpers.wappi_standin import WappiStandIn, serve_wappi_standin

# The functions host's FUNCTIONS_METRICS_KEY in these tests (tests/functions/test_metrics.py scrapes it).
METRICS_KEY = "functions-metrics-test-key"

# --- services -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def wappi() -> Iterator[tuple[WappiStandIn, str]]:
    with serve_wappi_standin() as served:
        yield served


@pytest.fixture(scope="session")
def wappi_standin(wappi: tuple[WappiStandIn, str]) -> WappiStandIn:
    return wappi[0]


# Small, so a test can send a file over crm_server's limit without moving 50 MB.
CRM_MEDIA_MAX_BYTES = 1_000_000


@pytest.fixture(scope="session")
def crm() -> Iterator[CrmServerProcess]:
    """crm_server with the sandbox; it may post webhooks to loopback (the functions host runs there) and fetch an
    outgoing file from loopback (the local Storage API's signed URLs)."""
    with tempfile.TemporaryDirectory(prefix="functions-crm-") as directory:
        server = CrmServerProcess(Path(directory), env={"CRM_ALLOW_PRIVATE_WEBHOOKS": "1",
                                                        "CRM_ALLOW_PRIVATE_MEDIA": "1",
                                                        "CRM_MEDIA_MAX_BYTES": str(CRM_MEDIA_MAX_BYTES)},
                                  name="functions")
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def crm_admin(crm: CrmServerProcess) -> Iterator[CrmClient]:
    assert crm.admin_key is not None
    client = crm.client(crm.admin_key)
    yield client
    client.close()


@dataclass(frozen=True)
class FunctionsHost:
    url: str  # .../functions/v1
    settings: FunctionsSettings
    # Opens what the host sealed in messenger_integrations.settings (tests read secrets only the server knows).
    sealer: SettingsSealer


@pytest.fixture(scope="session")
def functions_host(api_server: str, local_keys: Any, wappi: tuple[WappiStandIn, str]) -> Iterator[FunctionsHost]:
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    settings_key = Fernet.generate_key().decode()
    settings = FunctionsSettings(
        supabase_url=api_server, supabase_service_role_key=local_keys.service_role_key,
        supabase_jwt_secret=local_keys.jwt_secret, functions_public_url=public_url, wappi_base_url=wappi[1],
        crm_allow_http_loopback=True, store_attempts=3, http_timeout_seconds=10, send_timeout_seconds=15,
        settings_key=settings_key, metrics_key=METRICS_KEY)
    server = uvicorn.Server(uvicorn.Config(create_standalone_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="functions-host", daemon=True)
    thread.start()
    try:
        wait_http(f"{public_url}/health", expect_status=200)
        yield FunctionsHost(url=f"{public_url}/functions/v1", settings=settings, sealer=SettingsSealer(settings_key))
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
async def http(functions_host: FunctionsHost) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=functions_host.url, timeout=60.0) as client:
        yield client


@pytest.fixture(scope="session")
def sealer(functions_host: FunctionsHost) -> SettingsSealer:
    return functions_host.sealer


@pytest.fixture(scope="session")
async def db(database_urls: Any) -> AsyncIterator[asyncpg.Pool]:
    """Direct SQL (superuser) for arranging rows and counting what the functions stored."""
    async def codecs(connection: asyncpg.Connection) -> None:
        # Ids as strings and JSON as Python values, the way the functions see them over REST.
        await connection.set_type_codec("uuid", encoder=str, decoder=str, schema="pg_catalog", format="text")
        for name in ("json", "jsonb"):
            await connection.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")

    pool = await asyncpg.create_pool(database_urls.admin, min_size=1, max_size=4, init=codecs)
    assert pool is not None
    yield pool
    await pool.close()


# --- organizations, clients, integrations ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Organization:
    id: str
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_organization(db: asyncpg.Pool, local_keys: Any) -> Callable[[], Awaitable[Organization]]:
    async def make() -> Organization:
        organization_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
        async with db.acquire() as connection:
            await connection.execute("INSERT INTO public.organizations (id, name) VALUES ($1, $2)",
                                     organization_id, f"Org {organization_id[:8]}")
            await connection.execute("INSERT INTO auth.users (id, email) VALUES ($1, $2)",
                                     user_id, f"{user_id}@test.local")
            await connection.execute(
                "INSERT INTO public.profiles (id, organization_id, full_name) VALUES ($1, $2, 'Manager')",
                user_id, organization_id)
        return Organization(organization_id, user_id, user_token(user_id, local_keys.jwt_secret))

    return make


async def create_client(db: asyncpg.Pool, organization_id: str, *, name: str = "Client", phone: str | None = None,
                        username: str | None = None, telegram_user_id: str | None = None) -> str:
    return str(await db.fetchval(
        "INSERT INTO public.clients (organization_id, name, phone, telegram_username, telegram_user_id) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id", organization_id, name, phone, username, telegram_user_id))


async def create_wappi_integration(db: asyncpg.Pool, organization_id: str, profile_id: str, token: str, *,
                                   primary: bool = False, enabled: bool = True) -> str:
    """A wappi integration as the admin page saves it (settings only; Wappi needs no connect call)."""
    return str(await db.fetchval(
        "INSERT INTO public.messenger_integrations (organization_id, provider, name, is_primary, is_enabled, settings)"
        " VALUES ($1, 'wappi', $2, $3, $4, $5) RETURNING id", organization_id, f"Wappi {profile_id}",
        primary, enabled, {"profileId": profile_id, "apiToken": token}))


async def count(db: asyncpg.Pool, table: str, organization_id: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM public.{table} WHERE organization_id = $1", organization_id))


def sandbox_user(crm_admin: CrmClient, **fields: Any) -> tuple[int, str, str]:
    """A simulated Telegram user: (user id, phone, username)."""
    phone = new_phone()
    username = f"u{phone[1:]}"
    return crm_admin.user(phone, username=username, **fields), phone, username


@dataclass(frozen=True)
class Connected:
    integration_id: str
    phone: str
    webhook_url: str
    body: dict[str, Any]


async def connect_account(http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient,
                          organization: Organization, *, login: bool = True, api_key: str | None = None,
                          phone: str | None = None, name: str | None = None) -> Connected:
    """telegram-crm-connect for a fresh sandbox account, then (optionally) its login through crm_server."""
    phone = phone or new_phone()
    body: dict[str, Any] = {"crmApiUrl": crm.url, "crmApiKey": api_key or crm.admin_key, "crmPhoneNumber": phone}
    if name:
        body["name"] = name
    response = await http.post("/telegram-crm-connect", json=body, headers=organization.auth)
    assert response.status_code == 200, response.text
    answer = response.json()
    if login:
        crm_admin.login(organization.id, phone)
    return Connected(answer["integrationId"], phone, answer["webhookUrl"], answer)


async def stored_settings(db: asyncpg.Pool, sealer: SettingsSealer, integration_id: str) -> dict[str, Any]:
    """An integration's settings as the functions see them: read from the row, the sealed secrets opened."""
    settings = await db.fetchval("SELECT settings FROM public.messenger_integrations WHERE id = $1", integration_id)
    assert settings is not None
    return sealer.open(settings)


async def integration_secret(db: asyncpg.Pool, sealer: SettingsSealer, integration_id: str) -> tuple[str, str]:
    """(webhook_key, secret) of an integration, as only the server side knows them."""
    row = await db.fetchrow("SELECT webhook_key, settings FROM public.messenger_integrations WHERE id = $1",
                            integration_id)
    assert row is not None
    return row["webhook_key"], sealer.open(row["settings"])["secret"]


def webhook_request(secret: str, payload: dict[str, Any], *, signed: bool = True, event_id: str | None = None,
                    timestamp: int | None = None, with_secret: str | None = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers exactly as crm_server delivers a webhook (or unsigned, as a server of the original plan)."""
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json", "x-lovable-secret": secret if with_secret is None else with_secret}
    if signed:
        event_id = event_id or str(payload.get("event_id") or uuid.uuid4())
        sent_at = int(time.time()) if timestamp is None else timestamp
        headers.update({"webhook-id": event_id, "webhook-timestamp": str(sent_at),
                        "webhook-signature": signature.sign(secret, event_id, sent_at, body)})
    return body, headers


def event_body(organization_id: str, account_phone: str, kind: str | None, **fields: Any) -> dict[str, Any]:
    """A conversation event's webhook body (`kind` None: a plain message, without `type`)."""
    body = {"event_id": str(uuid.uuid4()), "project_id": organization_id, "account_phone": account_phone.lstrip("+"),
            "timestamp": "2026-12-01T10:00:00Z", **fields}
    if kind is not None:
        body["type"] = kind
    return body


def full_payload(organization_id: str, account_phone: str, *, from_id: int, text: str = "hello",
                 message_id: int | None = None, **extra: Any) -> dict[str, Any]:
    """The contract's webhook body."""
    message_id = message_id if message_id is not None else int(time.time() * 1000) % 1_000_000_000
    return {"event_id": str(uuid.uuid4()), "project_id": organization_id, "account_phone": account_phone.lstrip("+"),
            "from_id": from_id, "from_username": f"user{from_id}", "from_first_name": "Ivan",
            "from_last_name": "Petrov", "from_phone": None, "chat_id": from_id, "message_id": message_id,
            "text": text, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
