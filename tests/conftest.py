"""The running stack the tests share: one embedded PostgreSQL per test session, prepared with migrations and seed.

Starting PostgreSQL takes about a second; doing it once per session keeps the suite fast on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import uvicorn
from supabase import AsyncClient, AsyncClientOptions, acreate_client

from safeguards.http_limits import RequestLimits
from supabase_local.database import DatabaseUrls, LocalDatabase
from supabase_local.keys import LocalKeys, user_token
from supabase_local.keys import local_keys as make_local_keys
from tests.helpers.net import free_port, wait_http

DEMO_ORGANIZATION_ID = "00000000-0000-4000-8000-000000000001"
DEMO_USER_ID = "00000000-0000-4000-8000-0000000000a1"


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tgcrm-test-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def local_database(state_dir: Path) -> Iterator[LocalDatabase]:
    database = LocalDatabase(state_dir, port=free_port(), durable=False)
    database.start()
    try:
        asyncio.run(database.prepare(seed=True))
        yield database
    finally:
        database.stop()


@pytest.fixture(scope="session")
def database_urls(local_database: LocalDatabase) -> DatabaseUrls:
    return local_database.urls()


# -- the local Supabase API (REST gateway) and supabase-py clients for it ------------------------------------------

@pytest.fixture(scope="session")
def local_keys(state_dir: Path) -> LocalKeys:
    """The JWT secret and the anon/service_role keys of the test project (kept in the session's state folder)."""
    return make_local_keys(state_dir)


@pytest.fixture(scope="session")
def api_server(database_urls: DatabaseUrls, local_keys: LocalKeys, state_dir: Path) -> Iterator[str]:
    """`create_api_app` (/rest/v1, /auth/v1 and /storage/v1, files under `<state_dir>/storage`) under uvicorn in a
    background thread; yields the base URL (what SUPABASE_URL would be)."""
    from supabase_local.api import STORAGE_PREFIX, create_api_app
    from supabase_local.auth.app import create_auth_app
    from supabase_local.auth.config import auth_config
    from supabase_local.rest.app import create_rest_app
    from supabase_local.storage import create_storage_app

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    storage = create_storage_app(database_urls.authenticator, local_keys.jwt_secret, state_dir / "storage")
    app = create_api_app(create_rest_app(database_urls.authenticator, local_keys.jwt_secret),
                         extra_mounts={STORAGE_PREFIX: storage},
                         api_keys=(local_keys.anon_key, local_keys.service_role_key),
                         auth_app=create_auth_app(auth_config(local_keys.jwt_secret, base_url),
                                                  database_urls.auth_admin))
    # Idle connections kept as long as our own servers keep them (past the clients' pool expiry: no reuse race).
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="on",
                                           timeout_keep_alive=RequestLimits().keep_alive_seconds))
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    thread.start()
    try:
        wait_http(f"{base_url}/health", expect_status=200)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def create_supabase_client(base_url: str, key: str, token: str | None = None) -> AsyncClient:
    """supabase-py's async client as the functions build it; `token` is a user's JWT sent as Authorization."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await acreate_client(base_url, key, options=AsyncClientOptions(headers=headers))


ClientFactory = Callable[..., Awaitable[AsyncClient]]


@pytest.fixture(scope="session")
async def make_supabase_client(api_server: str) -> AsyncIterator[ClientFactory]:
    """`await make_supabase_client(key, token=None)`: a client against `api_server`, closed when the session ends."""
    clients: list[AsyncClient] = []

    async def make(key: str, token: str | None = None) -> AsyncClient:
        client = await create_supabase_client(api_server, key, token)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.postgrest.aclose()


@pytest.fixture(scope="session")
async def service_client(make_supabase_client: ClientFactory, local_keys: LocalKeys) -> AsyncClient:
    """supabase-py with the service_role key: bypasses RLS, as the functions use it."""
    return await make_supabase_client(local_keys.service_role_key)


@pytest.fixture(scope="session")
async def anon_client(make_supabase_client: ClientFactory, local_keys: LocalKeys) -> AsyncClient:
    return await make_supabase_client(local_keys.anon_key)


UserClientFactory = Callable[[str], Awaitable[AsyncClient]]


@pytest.fixture(scope="session")
def user_client(make_supabase_client: ClientFactory, local_keys: LocalKeys) -> UserClientFactory:
    """`await user_client(user_id)`: supabase-py signed in as that auth user (anon key + the user's JWT)."""

    async def make(user_id: str) -> AsyncClient:
        return await make_supabase_client(local_keys.anon_key, user_token(user_id, local_keys.jwt_secret))

    return make


@dataclass(frozen=True)
class OrganizationMember:
    organization_id: str
    user_id: str
    client_id: str  # one client row of the organization


async def create_organization_member(admin_dsn: str, name: str) -> OrganizationMember:
    """An organization, an auth user with a profile in it, and one client, written with the admin login."""
    organization_id, user_id, client_id = (str(uuid.uuid4()) for _ in range(3))
    conn = await asyncpg.connect(admin_dsn)
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO organizations (id, name) VALUES ($1, $2)", organization_id, name)
            await conn.execute("INSERT INTO auth.users (id, email) VALUES ($1, $2)", user_id,
                               f"{user_id}@example.test")
            await conn.execute("INSERT INTO profiles (id, organization_id, full_name) VALUES ($1, $2, $3)",
                               user_id, organization_id, f"{name} member")
            await conn.execute("INSERT INTO clients (id, organization_id, name) VALUES ($1, $2, $3)",
                               client_id, organization_id, f"{name} client")
    finally:
        await conn.close()
    return OrganizationMember(organization_id, user_id, client_id)


@pytest.fixture(scope="session")
async def other_organization(database_urls: DatabaseUrls) -> OrganizationMember:
    """A second organization beside the seeded demo one, with its own user and client (for RLS tests)."""
    return await create_organization_member(database_urls.admin, "Other Organization")


StatusRecorder = Callable[[AsyncClient], contextlib.AbstractAsyncContextManager[list[int]]]


@pytest.fixture(scope="session")
def record_statuses() -> StatusRecorder:
    """`async with record_statuses(client) as statuses:` collects the HTTP statuses supabase-py received.

    supabase-py's APIError carries PostgREST's code but not the status; this hooks its httpx session to see both.
    """

    @contextlib.asynccontextmanager
    async def record(client: AsyncClient) -> AsyncIterator[list[int]]:
        statuses: list[int] = []

        async def hook(response: httpx.Response) -> None:
            statuses.append(response.status_code)

        hooks = client.postgrest.session.event_hooks["response"]
        hooks.append(hook)
        try:
            yield statuses
        finally:
            hooks.remove(hook)

    return record
