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


def test_a_second_server_on_the_same_store_leaves_the_first_ones_accounts_alone(
    first: CrmServerProcess, admin_key: str, state_dir: Path
) -> None:
    api = first.client(admin_key)
    account, user_phone = new_phone(), new_phone()
    username = f"l{user_phone[1:]}"
    api.login(PROJECT, account)
    api.user(user_phone, username=username)

    second = CrmServerProcess(state_dir, env=LEASE_ENV, name="second").start()
    try:
        other = second.client(admin_key)
        time.sleep(2.5)  # more than a lease period: had it wanted to, it would have taken the account by now
        seen = other.account(PROJECT, account)
        assert seen["connected"] is False and seen["state"] == "held_elsewhere"
        refused = other.send(PROJECT, account, f"@{username}", "from the second server")
        assert refused.status_code == 503 and refused.json()["code"] == "ACCOUNT_DISCONNECTED"
        assert api.send(PROJECT, account, f"@{username}", "from the first server").status_code == 200
        assert api.account(PROJECT, account)["connected"] is True

        # When the first server dies (no clean shutdown) its lease expires, and the second one takes over.
        first.kill()
        taken = other.wait_account(PROJECT, account, "connected", timeout=20)
        assert taken["connected"] is True
        response = other.send(PROJECT, account, f"@{username}", "from the second server")
        assert response.status_code == 200, response.text
        assert [m["text"] for m in other.sent(account)] == ["from the first server", "from the second server"]
        other.close()
    finally:
        second.stop()
        api.close()
        first.start()
