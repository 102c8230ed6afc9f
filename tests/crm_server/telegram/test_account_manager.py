"""AccountManager in-process on the sandbox: hooks for live clients, bounded start-up, leases between managers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crm_server import errors
from crm_server.sandbox import LOGIN_CODE, SandboxWorld
from crm_server.settings import ServerSettings
from crm_server.store import Store
from crm_server.telegram.manager import AccountManager
from crm_server.telegram.states import AccountKey


def settings(tmp_path: Path, **overrides: object) -> ServerSettings:
    values: dict[str, object] = {"state_dir": tmp_path, "sandbox": True, "lease_ttl_seconds": 0.6}
    values.update(overrides)
    return ServerSettings(**values)  # type: ignore[arg-type]


async def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def login(manager: AccountManager, project: str, phone: str) -> None:
    await manager.send_code(project, phone)
    assert await manager.sign_in(project, phone, LOGIN_CODE) == "authorized"


async def test_hooks_run_for_every_live_client_after_login_and_after_a_restart(
    world: SandboxWorld, store: Store, tmp_path: Path
) -> None:
    # The clients themselves, not their id(): an id may be reused once the first client is collected.
    started: list[tuple[AccountKey, object]] = []

    async def on_started(key: AccountKey, client: object) -> None:
        started.append((key, client))

    first = AccountManager(store, settings(tmp_path))
    first.on_client_started.append(on_started)
    await first.start()
    await login(first, "p", "+15557000001")
    await wait_for(lambda: asyncio.sleep(0, result=len(started) == 1))
    await first.stop()

    second = AccountManager(store, settings(tmp_path))
    second.on_client_started.append(on_started)
    await second.start()
    await wait_for(lambda: asyncio.sleep(0, result=len(started) == 2))
    await second.stop()
    assert [key for key, _ in started] == [AccountKey("p", "+15557000001")] * 2
    assert started[0][1] is not started[1][1]  # a new client each time


async def test_start_connects_every_stored_account_with_bounded_concurrency(
    world: SandboxWorld, store: Store, tmp_path: Path
) -> None:
    phones = [f"+1555710000{i}" for i in range(6)]
    loader = AccountManager(store, settings(tmp_path))
    for phone in phones:
        await login(loader, "p", phone)
    await loader.stop()

    manager = AccountManager(store, settings(tmp_path, connect_concurrency=2, connect_stagger_seconds=0.01))
    await manager.start()
    try:
        await wait_for(lambda: asyncio.sleep(0, result=manager.connected_count() == 6))
        statuses = await manager.status("p")
        assert {s.phone for s in statuses if s.connected} == set(phones)
    finally:
        await manager.stop()


async def test_a_second_manager_cannot_log_in_an_account_the_first_is_logging_in(
    world: SandboxWorld, store: Store, tmp_path: Path
) -> None:
    first = AccountManager(store, settings(tmp_path))
    second = AccountManager(store, settings(tmp_path))
    await first.start()
    await second.start()
    try:
        await first.send_code("p", "+15557200001")
        with pytest.raises(errors.AccountDisconnectedError):
            await second.send_code("p", "+15557200001")
    finally:
        await first.stop()
        await second.stop()


async def test_an_abandoned_login_gives_its_lease_back(world: SandboxWorld, store: Store, tmp_path: Path) -> None:
    first = AccountManager(store, settings(tmp_path, login_ttl_seconds=0.3))
    second = AccountManager(store, settings(tmp_path))
    await first.start()
    await second.start()
    try:
        await first.send_code("p", "+15557300001")

        async def second_may_log_in() -> bool:
            try:
                await second.send_code("p", "+15557300001")
            except errors.AccountDisconnectedError:
                return False
            return True

        await wait_for(second_may_log_in)
        assert await second.sign_in("p", "+15557300001", LOGIN_CODE) == "authorized"
        with pytest.raises(errors.LoginNotStartedError):
            await first.sign_in("p", "+15557300001", LOGIN_CODE)
    finally:
        await first.stop()
        await second.stop()


async def test_a_dropped_connection_is_reconnected_and_sends_work_again(
    world: SandboxWorld, store: Store, tmp_path: Path
) -> None:
    from crm_server.telegram.recipients import Recipient

    started: list[object] = []

    async def on_started(key: AccountKey, client: object) -> None:
        started.append(client)

    manager = AccountManager(store, settings(tmp_path))
    manager.on_client_started.append(on_started)
    await manager.start()
    try:
        await login(manager, "p", "+15557400001")
        world.create_user("+15557400099", username="reconnect_peer")
        await manager.send("p", "+15557400001", Recipient("username", "reconnect_peer"), "before")
        assert world.drop_connections("+15557400001") >= 1

        async def reconnected() -> bool:
            return len(started) == 2 and manager.connected_count() == 1

        await wait_for(reconnected)
        await manager.send("p", "+15557400001", Recipient("username", "reconnect_peer"), "after")
        assert [m["text"] for m in world.sent("+15557400001")] == ["before", "after"]
        assert (await manager.status("p"))[0].state == "connected"
    finally:
        await manager.stop()
