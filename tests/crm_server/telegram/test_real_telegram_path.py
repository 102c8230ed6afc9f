"""The path real credentials take, as far as it goes offline: settings from the environment → ClientFactory's client
with Telethon's own sender and connection (no sandbox) → a login and a stored account against loopback peers that
hang up or stay silent, which must end as network failures (503, "disconnected" and retrying), never hang or crash.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from telethon.crypto import AuthKey
from telethon.network.connection import ConnectionTcpFull
from telethon.network.mtprotosender import MTProtoSender

from crm_server import errors
from crm_server.sandbox import installed_world
from crm_server.settings import TEST_DC, ServerSettings
from crm_server.store import Store
from crm_server.telegram.clients import ClientFactory
from crm_server.telegram.manager import AccountManager
from crm_server.telegram.session import StoreSession
from crm_server.telegram.states import AccountKey, AccountState

API_ID, API_HASH = 1234567, "0123456789abcdef0123456789abcdef"
PROJECT = "00000000-0000-4000-8000-00000000d0c0"
PHONE = "+9996621234"
# A hang would otherwise stop the whole run: past this the test fails instead (it is no timing assertion).
HANG_GUARD_SECONDS = 60.0


@pytest.fixture(autouse=True)
def real_telethon() -> None:
    assert installed_world() is None, "a sandbox world is installed: these tests need Telethon's own sender"


@dataclass
class LoopbackPeer:
    """A TCP server on loopback that accepts and then hangs up at once, or says nothing at all."""

    hang_up: bool
    connections: int = 0
    port: int = 0
    _held: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.hang_up:
            writer.close()
        else:
            self._held.append(writer)  # open and silent until the test ends

    @property
    def dc(self) -> str:
        return f"2:127.0.0.1:{self.port}"


async def serve(peer: LoopbackPeer) -> asyncio.Server:
    server = await asyncio.start_server(peer._accept, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    return server


@pytest.fixture(params=[True, False], ids=["hangs-up", "silent"])
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[LoopbackPeer]:
    running = LoopbackPeer(hang_up=request.param)
    server = await serve(running)
    yield running
    for writer in running._held:
        writer.close()
    server.close()


def real_settings(tmp_path: Path, **overrides: object) -> ServerSettings:
    values: dict[str, object] = {"state_dir": tmp_path, "telegram_api_id": API_ID, "telegram_api_hash": API_HASH,
                                 "telegram_connect_timeout_seconds": 1.0}
    values.update(overrides)
    return ServerSettings(**values)  # type: ignore[arg-type]


def test_settings_from_the_environment_build_a_client_for_telegrams_test_servers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CRM_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TELEGRAM_API_ID", str(API_ID))
    monkeypatch.setenv("TELEGRAM_API_HASH", API_HASH)
    monkeypatch.setenv("TELEGRAM_DC", "test")
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    settings = ServerSettings()  # type: ignore[call-arg]
    assert settings.sandbox is False
    assert settings.telegram_credentials() == (API_ID, API_HASH)

    # As Account.begin_login starts a new session.
    session = StoreSession()
    dc = settings.telegram_dc_address()
    assert dc == TEST_DC == (2, "149.154.167.40", 443)
    session.set_dc(*dc)
    client = ClientFactory(settings).build(session, AccountKey(PROJECT, PHONE))

    assert type(client._sender) is MTProtoSender  # Telethon's own, not the sandbox's
    assert client._connection is ConnectionTcpFull
    assert client.session is session
    assert (session.dc_id, session.server_address, session.port) == TEST_DC
    assert (client.api_id, client.api_hash) == (API_ID, API_HASH)
    assert client.flood_sleep_threshold == 0  # a FloodWait becomes our 429, never a sleep inside a request
    assert not client.is_connected()


async def test_a_login_to_an_unreachable_telegram_is_answered_as_a_network_failure(
        tmp_path: Path, store: Store, peer: LoopbackPeer) -> None:
    manager = AccountManager(store, real_settings(tmp_path, telegram_dc=peer.dc))
    try:
        with pytest.raises(errors.AccountDisconnectedError) as raised:
            await asyncio.wait_for(manager.send_code(PROJECT, PHONE), HANG_GUARD_SECONDS)
        assert raised.value.status_code == 503
        assert peer.connections >= 1  # it did try the address TELEGRAM_DC names
        [status] = await manager.status(PROJECT, PHONE)
        assert (status.state, status.authorized) == (AccountState.AUTH_REQUIRED, False)
    finally:
        await manager.stop()


async def test_a_logged_in_account_whose_telegram_is_unreachable_is_disconnected_and_keeps_retrying(
        tmp_path: Path, store: Store, peer: LoopbackPeer) -> None:
    # A session as a login on the real network leaves it: an auth key, the DC, the account authorized.
    session = StoreSession()
    session.set_dc(2, "127.0.0.1", peer.port)
    session.auth_key = AuthKey(os.urandom(256))
    await store.accounts.ensure(PROJECT, PHONE)
    assert await store.accounts.acquire_lease(PROJECT, PHONE, "earlier-server", 30.0)
    assert await store.accounts.save_session(PROJECT, PHONE, session.to_bytes(), "earlier-server")
    await store.accounts.mark_authorized(PROJECT, PHONE, 42, "someone")
    await store.accounts.release_lease(PROJECT, PHONE, "earlier-server")

    manager = AccountManager(store, real_settings(tmp_path, telegram_dc=None))
    await manager.start()
    try:
        async def retried() -> None:
            while peer.connections < 2:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(retried(), HANG_GUARD_SECONDS)
        [status] = await manager.status(PROJECT, PHONE)
        assert status.state in (AccountState.DISCONNECTED, AccountState.CONNECTING)
        assert (status.authorized, status.connected) == (True, False)
        # Still authorized in the store: an outage is no reason to ask for a new login.
        record = await store.accounts.get(PROJECT, PHONE)
        assert record is not None and record.authorized
    finally:
        await manager.stop()
