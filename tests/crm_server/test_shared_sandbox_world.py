"""Two crm_server processes on one sandbox world file (`CRM_SANDBOX_WORLD`) see one Telegram: a message injected
through one instance reaches the account's live client in the other and its webhook; a send through one shows in the
other's `/sandbox/sent`; users made through either exist for both; a termination through one logs the account out
in the other; an account whose client stops in one instance and starts in another (same store) catches up on what
arrived in between, each message once."""

from __future__ import annotations

import collections
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crm_server.server_process import CrmClient, CrmServerProcess, admin_client, new_phone, running_server
from tests.helpers.receiver import Receiver

PROJECT = "2b7e1c9a-6f3d-4a5b-8c2e-0000000000c1"
SECRET = "shared-world-secret"
SERVER_ENV = {
    "CRM_ALLOW_PRIVATE_WEBHOOKS": "1",
    "CRM_WEBHOOK_RETRY_FIRST_SECONDS": "0.2",
    "CRM_WEBHOOK_RETRY_MAX_SECONDS": "1",
    "CRM_LEASE_TTL_SECONDS": "3",
}


@pytest.fixture(scope="module")
def world_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="crm-shared-world-") as directory:
        yield Path(directory) / "sandbox_world.sqlite3"


@pytest.fixture(scope="module")
def server_a(world_file: Path) -> Iterator[CrmServerProcess]:
    with running_server("world-a", {**SERVER_ENV, "CRM_SANDBOX_WORLD": str(world_file)}) as process:
        yield process


@pytest.fixture(scope="module")
def server_b(world_file: Path, server_a: CrmServerProcess) -> Iterator[CrmServerProcess]:
    with running_server("world-b", {**SERVER_ENV, "CRM_SANDBOX_WORLD": str(world_file)}) as process:
        yield process


@pytest.fixture(scope="module")
def admin_a(server_a: CrmServerProcess) -> Iterator[CrmClient]:
    with admin_client(server_a) as client:
        yield client


@pytest.fixture(scope="module")
def admin_b(server_b: CrmServerProcess) -> Iterator[CrmClient]:
    with admin_client(server_b) as client:
        yield client


def connect_account(admin: CrmClient, receiver: Receiver) -> str:
    phone = new_phone()
    admin.ok(admin.post("/integration/lovable/connect", json={
        "project_id": PROJECT, "phone": phone, "webhook_url": receiver.url, "secret": SECRET}))
    admin.login(PROJECT, phone)
    return phone


def incoming(admin: CrmClient, account: str, sender: str, text: str) -> int:
    return int(admin.ok(admin.post("/sandbox/incoming", json={
        "account_phone": account, "from": sender, "text": text}))["message_id"])


def message_texts(receiver: Receiver, account: str) -> list[str]:
    """The account's message events, one per event id, in arrival order."""
    seen: dict[str, str] = {}
    for item in list(receiver.accepted):
        body = item.json
        if body["account_phone"] == account and body.get("type", "message") == "message":
            seen.setdefault(body["event_id"], body["text"])
    return list(seen.values())


def test_a_message_injected_through_one_instance_reaches_the_webhook_of_the_other(
    admin_a: CrmClient, admin_b: CrmClient, fresh_receiver: Receiver
) -> None:
    account = connect_account(admin_b, fresh_receiver)  # its live client runs in B
    client = new_phone()
    user_id = admin_a.user(client, username=f"wa{client[-7:]}", first_name="Wanda")  # made through A

    message_id = incoming(admin_a, account, client, "hello through A")

    fresh_receiver.wait_for(lambda r: len(message_texts(r, account)) == 1, timeout=15)
    body = next(item.json for item in fresh_receiver.accepted if item.json["account_phone"] == account)
    assert (body["text"], body["message_id"], body["chat_id"]) == ("hello through A", message_id, user_id)
    assert (body["from_id"], body["from_username"], body["from_first_name"]) == (user_id, f"wa{client[-7:]}", "Wanda")


def test_a_send_through_one_instance_shows_in_the_others_sent_list(
    admin_a: CrmClient, admin_b: CrmClient, fresh_receiver: Receiver
) -> None:
    account = connect_account(admin_b, fresh_receiver)
    client = new_phone()
    user_id = admin_a.user(client, username=f"wb{client[-7:]}")  # a user made through A, addressed through B

    response = admin_b.send(PROJECT, account, f"@wb{client[-7:]}", "sent by B's client")

    assert response.status_code == 200, response.text
    sent = admin_a.sent(account)
    assert [(item["to_user_id"], item["text"], item["message_id"]) for item in sent] == [
        (user_id, "sent by B's client", response.json()["message_id"])]


def test_a_session_terminated_through_one_instance_logs_the_account_out_in_the_other(
    admin_a: CrmClient, admin_b: CrmClient, fresh_receiver: Receiver
) -> None:
    account = connect_account(admin_b, fresh_receiver)

    admin_a.ok(admin_a.post("/sandbox/revoke", json={"account_phone": account}))

    status = admin_b.wait_account(PROJECT, account, "logged_out")
    assert status["state"] == "logged_out" and status["authorized"] is False


def test_a_client_stopped_in_one_instance_and_started_in_another_catches_up_each_message_once(
    admin_a: CrmClient, server_b: CrmServerProcess, fresh_receiver: Receiver
) -> None:
    with admin_client(server_b) as admin_b:
        account = connect_account(admin_b, fresh_receiver)
    client = new_phone()
    admin_a.user(client)
    incoming(admin_a, account, client, "before the stop")
    fresh_receiver.wait_for(lambda r: len(message_texts(r, account)) == 1, timeout=15)
    time.sleep(0.5)  # the session's update state (pts) is written debounced; a graceful stop flushes it anyway

    server_b.stop()  # its client stops; SIGTERM hands the lease over
    for number in range(5):
        incoming(admin_a, account, client, f"while nobody listened {number}")
    # Another instance on B's store (and the same world) takes the account over with B's stored session.
    server_c = CrmServerProcess(server_b.state_dir, env=server_b.env, name="world-c").start()
    try:
        admin_c = server_c.client(server_b.admin_key)  # the store's admin key (printed only at its first start)
        try:
            assert admin_c.wait_account(PROJECT, account, "connected", timeout=20)["connected"] is True
        finally:
            admin_c.close()
        incoming(admin_a, account, client, "after the takeover")
        expected = (["before the stop"] + [f"while nobody listened {number}" for number in range(5)]
                    + ["after the takeover"])
        fresh_receiver.wait_for(lambda r: len(message_texts(r, account)) == len(expected), timeout=30)
        time.sleep(0.5)  # a second delivery of any of them would arrive by now

        assert message_texts(fresh_receiver, account) == expected
        texts = collections.Counter(item.json["text"] for item in fresh_receiver.accepted
                                    if item.json["account_phone"] == account)
        assert set(texts.values()) == {1}, texts  # not even a redelivery: each message was stored once
    finally:
        server_c.stop()
