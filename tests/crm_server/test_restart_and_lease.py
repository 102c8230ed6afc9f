"""Server processes that stop, restart and share a store: sessions survive, dead sessions stay dead, one owner per account."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_server.sandbox import SandboxWorld
from tests.crm_server.server_process import CrmServerProcess, new_phone

PROJECT = "proj-restart"
# A short lease so a second server takes over within a second or two of the first one going away.
LEASE_ENV = {"CRM_LEASE_TTL_SECONDS": "2"}


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="crm-restart-") as directory:
        yield Path(directory)


@pytest.fixture(scope="module")
def first(state_dir: Path) -> Iterator[CrmServerProcess]:
    server = CrmServerProcess(state_dir, env=LEASE_ENV, name="first").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin_key(first: CrmServerProcess) -> str:
    assert first.admin_key is not None
    return first.admin_key


def test_a_restarted_server_sends_without_a_new_login_and_knows_ids_it_saw(
    first: CrmServerProcess, admin_key: str
) -> None:
    api = first.client(admin_key)
    account, user_phone = new_phone(), new_phone()
    api.login(PROJECT, account)
    user_id = api.user(user_phone, username=f"r{user_phone[1:]}")
    writer = api.user(new_phone())  # known to the account only because it wrote first
    api.ok(api.post("/sandbox/incoming", json={"account_phone": account, "from": writer, "text": "hello"}))
    assert api.send(PROJECT, account, f"@r{user_phone[1:]}", "before restart").status_code == 200
    time.sleep(1.0)  # let the debounced session write land (it is flushed on shutdown too)
    api.close()

    first.stop()
    first.start()
    assert first.admin_key == admin_key  # not printed again: the store already has an admin key
    assert first.log_text().count("CRM_API_KEY=") == 1

    api = first.client(admin_key)
    response = api.send(PROJECT, account, f"@r{user_phone[1:]}", "after restart")
    assert response.status_code == 200, response.text
    assert response.json()["to_user_id"] == user_id
    by_id = api.send(PROJECT, account, writer, "by id after restart")
    assert by_id.status_code == 200, by_id.text
    assert [m["text"] for m in api.sent(account)] == ["before restart", "after restart", "by id after restart"]
    assert api.account(PROJECT, account)["connected"] is True
    api.close()


def test_a_session_revoked_while_the_server_was_down_is_logged_out_after_restart(
    first: CrmServerProcess, admin_key: str, state_dir: Path
) -> None:
    api = first.client(admin_key)
    account = new_phone()
    api.login(PROJECT, account)
    api.close()
    first.stop()
    # Another process may change the (file-backed) world while the server is down.
    with SandboxWorld(state_dir / "sandbox_world.sqlite3") as world:
        world.revoke(account)
    first.start()
    api = first.client(admin_key)
    status = api.wait_account(PROJECT, account, "logged_out")
    assert status["state"] == "logged_out" and status["authorized"] is False
    assert api.send(PROJECT, account, "@anyone", "hi").json()["code"] == "ACCOUNT_NOT_AUTHORIZED"
    api.close()


def _held(server: CrmServerProcess, key: str) -> int:
    client = server.client(key)
    try:
        return int(client.ok(client.get("/health"))["accounts_held"])
    finally:
        client.close()


def test_a_second_server_on_the_same_store_takes_its_share_and_a_dead_ones_accounts(
    first: CrmServerProcess, admin_key: str, state_dir: Path
) -> None:
    api = first.client(admin_key)
    account, user_phone = new_phone(), new_phone()
    username = f"l{user_phone[1:]}"
    api.login(PROJECT, account)
    api.user(user_phone, username=username)
    api.close()
    authorized = sum(1 for entry in api_status(first, admin_key) if entry["authorized"])
    assert authorized == 2  # this test's account and the first test's

    second = CrmServerProcess(state_dir, env=LEASE_ENV, name="second").start()
    servers = {"first": first, "second": second}
    killed: CrmServerProcess | None = None
    try:
        # The joining server gets its share (one of two); the first hands one over, and only one.
        deadline = time.monotonic() + 20
        while (_held(first, admin_key), _held(second, admin_key)) != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (_held(first, admin_key), _held(second, admin_key)) == (1, 1)

        # Without CRM_CLUSTER_SECRET nothing is forwarded: the server that does not run the account refuses a send,
        # and every server's status is the holder's live one.
        answers = {name: server.client(admin_key).send(PROJECT, account, f"@{username}", f"from {name}")
                   for name, server in servers.items()}
        holder = next(name for name, answer in answers.items() if answer.status_code == 200)
        other = "second" if holder == "first" else "first"
        assert answers[other].status_code == 503 and answers[other].json()["code"] == "ACCOUNT_DISCONNECTED"
        for server in servers.values():
            assert server.client(admin_key).account(PROJECT, account)["connected"] is True

        # When the holder dies (no clean shutdown) its lease expires, and the other one takes over.
        killed = servers[holder]
        killed.kill()
        survivor = servers[other]
        deadline = time.monotonic() + 20
        while _held(survivor, admin_key) != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        client = survivor.client(admin_key)
        assert client.wait_account(PROJECT, account, "connected", timeout=20)["connected"] is True
        response = client.send(PROJECT, account, f"@{username}", f"from {other}")
        assert response.status_code == 200, response.text
        assert [m["text"] for m in client.sent(account)] == [f"from {holder}", f"from {other}"]
        client.close()
    finally:
        second.stop()
        if killed is first or first.process is None:
            first.start()


def api_status(server: CrmServerProcess, key: str) -> list[dict]:
    client = server.client(key)
    try:
        answer = client.ok(client.get("/telegram/status", params={"project_id": PROJECT}))
        return answer["accounts"]  # type: ignore[no-any-return]
    finally:
        client.close()
