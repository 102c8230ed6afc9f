"""History backfill and gap repair end to end: the sandbox's dialogs written before the account logged in (and
during a forced `updates.differenceTooLong`) → Telethon's real GetDialogs/GetHistory → crm_server's outbox →
signed webhooks on a real socket; imports twice and across a restart deliver each message once."""

from __future__ import annotations

import collections
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crm_server.sandbox import SandboxWorld
from crm_server.webhooks.events import EVENT_TYPES
from tests.crm_server.server_process import (
    CrmClient, CrmServerProcess, admin_client, new_phone, run_cli, running_server,
)
from tests.helpers.receiver import Receiver

PROJECT = "2b7e1c9a-6f3d-4a5b-8c2e-0000000000f1"
OTHER_PROJECT = "2b7e1c9a-6f3d-4a5b-8c2e-0000000000f2"
SECRET = "history-import-secret"
SERVER_ENV = {
    "CRM_ALLOW_PRIVATE_WEBHOOKS": "1",
    "CRM_WEBHOOK_RETRY_FIRST_SECONDS": "0.2",
    "CRM_WEBHOOK_RETRY_MAX_SECONDS": "1",
    "CRM_LEASE_TTL_SECONDS": "3",
    "CRM_HISTORY_REQUESTS_PER_SECOND": "20",
}
CHATS, PER_CHAT_WRITTEN = 3, 60


@pytest.fixture(scope="module")
def server() -> Iterator[CrmServerProcess]:
    with running_server("history", SERVER_ENV) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: CrmServerProcess) -> Iterator[CrmClient]:
    with admin_client(server) as client:
        yield client


def connect(admin: CrmClient, receiver: Receiver, phone: str) -> None:
    admin.ok(admin.post("/integration/lovable/connect", json={
        "project_id": PROJECT, "phone": phone, "webhook_url": receiver.url, "secret": SECRET,
        "events": list(EVENT_TYPES)}))
    admin.login(PROJECT, phone)


def write_history(admin: CrmClient, account: str) -> dict[int, list[int]]:
    """CHATS clients each write PER_CHAT_WRITTEN messages to an account not logged in yet; chat → message ids."""
    chats: dict[int, list[int]] = {}
    for n in range(CHATS):
        client = new_phone()
        user_id = admin.user(client, username=f"hist{n}_{client[-6:]}")
        chats[user_id] = [admin.ok(admin.post("/sandbox/incoming", json={
            "account_phone": account, "from": client, "text": f"old {n}.{i}"}))["message_id"]
            for i in range(PER_CHAT_WRITTEN)]
    return chats


def message_bodies(receiver: Receiver, account: str) -> list[dict[str, Any]]:
    """The account's message events in arrival order, one per event id."""
    seen: dict[str, dict[str, Any]] = {}
    for item in list(receiver.accepted):
        body = item.json
        if body["account_phone"] == account and body.get("type") in ("message", "message.outgoing"):
            seen.setdefault(body["event_id"], body)
    return list(seen.values())


def posts_per_event(receiver: Receiver, account: str) -> collections.Counter[str]:
    return collections.Counter(item.json["event_id"] for item in list(receiver.accepted)
                               if item.json["account_phone"] == account)


def wait_idle(admin: CrmClient) -> None:
    deadline = time.monotonic() + 20
    while admin.ok(admin.get("/webhooks/deliveries", params={"project_id": PROJECT, "state": "pending"}))[
            "deliveries"] and time.monotonic() < deadline:
        time.sleep(0.05)


def delivered_rows(admin: CrmClient, account: str) -> list[dict[str, Any]]:
    rows = admin.ok(admin.get("/webhooks/deliveries", params={"project_id": PROJECT, "state": "delivered",
                                                               "limit": 1000}))["deliveries"]
    return [row for row in rows if row["phone"] == account]


def start_job(admin: CrmClient, account: str, **fields: Any) -> str:
    response = admin.post("/telegram/history/import", json={"project_id": PROJECT, "phone": account, **fields})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]  # type: ignore[no-any-return]


def wait_job(admin: CrmClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = admin.ok(admin.get(f"/telegram/history/import/{job_id}"))
        if job["state"] != "running" or time.monotonic() > deadline:
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)


def test_first_connect_imports_the_newest_50_per_chat_oldest_first_and_twice_stores_nothing_twice(
        admin, fresh_receiver, server) -> None:
    account = new_phone()
    chats = write_history(admin, account)
    counts_before = admin.ok(admin.get("/sandbox/requests"))["counts"]
    started = time.monotonic()
    connect(admin, fresh_receiver, account)  # the first connect imports by itself (CRM_HISTORY_ON_CONNECT)
    fresh_receiver.wait_for(lambda r: len(message_bodies(r, account)) >= CHATS * 50)
    elapsed = time.monotonic() - started
    wait_idle(admin)

    bodies = message_bodies(fresh_receiver, account)
    assert len(bodies) == CHATS * 50
    for chat_id, ids in chats.items():
        arrived = [b for b in bodies if b["chat_id"] == chat_id]
        assert [b["message_id"] for b in arrived] == ids[-50:]  # the newest 50, oldest first
        assert all(b["type"] == "message" and b["history"] is True for b in arrived)
        assert arrived[0]["text"] == f"old {list(chats).index(chat_id)}.{PER_CHAT_WRITTEN - 50}"
    counts = admin.ok(admin.get("/sandbox/requests"))["counts"]
    history_requests = counts.get("GetHistoryRequest", 0) - counts_before.get("GetHistoryRequest", 0)
    dialogs_requests = counts.get("GetDialogsRequest", 0) - counts_before.get("GetDialogsRequest", 0)
    assert history_requests == CHATS  # one GetHistory per dialog for 50 messages
    print(f"\nbackfill: {len(bodies)} messages delivered in {elapsed:.2f}s from connect "
          f"({len(bodies) / elapsed:.0f} msg/s); GetDialogs {dialogs_requests}, GetHistory {history_requests} "
          f"for {CHATS} dialogs")
    rows_before = delivered_rows(admin, account)

    response = admin.post("/telegram/history/import", json={"project_id": PROJECT, "phone": account})
    assert response.status_code == 202
    job = wait_job(admin, response.json()["job_id"])
    assert (job["state"], job["dialogs"], job["messages"]) == ("done", CHATS, CHATS * 50)
    wait_idle(admin)
    assert len(delivered_rows(admin, account)) == len(rows_before)  # no second outbox row for any event
    assert set(posts_per_event(fresh_receiver, account).values()) == {1}


def test_a_live_message_after_the_import_is_not_history_and_per_chat_and_since_are_applied(
        admin, fresh_receiver) -> None:
    account = new_phone()
    chats = write_history(admin, account)
    connect(admin, fresh_receiver, account)
    fresh_receiver.wait_for(lambda r: len(message_bodies(r, account)) >= CHATS * 50)
    writer = new_phone()
    admin.user(writer, username=f"live_{writer[-6:]}")
    live = admin.ok(admin.post("/sandbox/incoming", json={"account_phone": account, "from": writer,
                                                          "text": "live"}))["message_id"]
    fresh_receiver.wait_for(lambda r: any(b["message_id"] == live for b in message_bodies(r, account)))
    body = next(b for b in message_bodies(fresh_receiver, account) if b["message_id"] == live)
    assert "history" not in body

    response = admin.post("/telegram/history/import", json={
        "project_id": PROJECT, "phone": account, "per_chat": 5, "since": "2000-01-01"})
    job = wait_job(admin, response.json()["job_id"])
    assert (job["state"], job["dialogs"], job["messages"]) == ("done", CHATS + 1, CHATS * 5 + 1)
    future = admin.post("/telegram/history/import", json={"project_id": PROJECT, "phone": account,
                                                          "since": "2999-01-01T00:00:00Z"})
    assert future.status_code == 422 and future.json()["field"] == "since"


@pytest.mark.parametrize(("body", "field"), [
    ({"phone": "+15550001111"}, "project_id"),
    ({"project_id": PROJECT}, "phone"),
    ({"project_id": PROJECT, "phone": "+15550001111", "per_chat": 0}, "per_chat"),
    ({"project_id": PROJECT, "phone": "+15550001111", "per_chat": 501}, "per_chat"),
    ({"project_id": PROJECT, "phone": "+15550001111", "per_chat": "50"}, "per_chat"),
    ({"project_id": PROJECT, "phone": "+15550001111", "since": "last week"}, "since"),
])
def test_bad_import_requests_are_422_naming_the_field(admin, body, field) -> None:
    response = admin.post("/telegram/history/import", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field


def test_jobs_of_another_project_and_unknown_accounts_are_not_found(admin, fresh_receiver, server) -> None:
    account = new_phone()
    connect(admin, fresh_receiver, account)
    job_id = start_job(admin, account)
    other_key = run_cli("keys", "create", "--project", OTHER_PROJECT, state_dir=server.state_dir).strip()
    other = server.client(other_key)
    try:
        response = other.get(f"/telegram/history/import/{job_id}")
        assert response.status_code == 404 and response.json()["code"] == "HISTORY_JOB_NOT_FOUND"
        forbidden = other.post("/telegram/history/import", json={"project_id": PROJECT, "phone": account})
        assert forbidden.status_code == 403
    finally:
        other.close()
    assert admin.get("/telegram/history/import/hist_unknown").status_code == 404
    unknown = admin.post("/telegram/history/import", json={"project_id": PROJECT, "phone": new_phone()})
    assert unknown.status_code == 404 and unknown.json()["code"] == "ACCOUNT_NOT_FOUND"


@pytest.fixture
def own_server() -> Iterator[CrmServerProcess]:
    """A server the tests stop and start (its sandbox world is written to while it is down)."""
    with tempfile.TemporaryDirectory(prefix="crm-history-restart-") as directory:
        # A short webhook lease: rows the stopping worker held in flight keep its lease until expiry (the worker
        # releases none at a graceful stop), and the restarted server must not wait a minute for them.
        process = CrmServerProcess(Path(directory), env={**SERVER_ENV, "CRM_HISTORY_ON_CONNECT": "0",
                                                         "CRM_HISTORY_REQUESTS_PER_SECOND": "1",
                                                         "CRM_WEBHOOK_LEASE_SECONDS": "2"},
                                   name="history-restart")
        try:
            yield process
        finally:
            process.stop()


def test_an_import_interrupted_by_a_restart_resumes_and_delivers_each_message_once(
        own_server, fresh_receiver) -> None:
    own_server.start()
    admin = own_server.client(own_server.admin_key)
    try:
        account = new_phone()
        chats = write_history(admin, account)
        connect(admin, fresh_receiver, account)
        job_id = start_job(admin, account)
        deadline = time.monotonic() + 30
        while (job := admin.ok(admin.get(f"/telegram/history/import/{job_id}")))["dialogs"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        admin.close()
    own_server.stop()
    assert job["state"] == "running" and job["dialogs"] < CHATS  # stopped half way

    own_server.start()
    admin = own_server.client(own_server.admin_key)
    try:
        finished = wait_job(admin, job_id)
        assert (finished["state"], finished["dialogs"], finished["messages"]) == ("done", CHATS, CHATS * 50)
        fresh_receiver.wait_for(lambda r: len(message_bodies(r, account)) >= CHATS * 50)
        wait_idle(admin)
    finally:
        admin.close()
    bodies = message_bodies(fresh_receiver, account)
    for chat_id, ids in chats.items():
        assert [b["message_id"] for b in bodies if b["chat_id"] == chat_id] == ids[-50:]
    assert set(posts_per_event(fresh_receiver, account).values()) == {1}
    assert "history import " + job_id in own_server.log_text()


def test_messages_written_during_a_difference_too_long_gap_arrive_exactly_once(own_server, fresh_receiver) -> None:
    own_server.start()
    admin = own_server.client(own_server.admin_key)
    try:
        account = new_phone()
        connect(admin, fresh_receiver, account)
        known, new = new_phone(), new_phone()
        known_id = admin.user(known, username=f"gapk_{known[-6:]}")
        new_id = admin.user(new, username=f"gapn_{new[-6:]}")
        before = admin.ok(admin.post("/sandbox/incoming", json={"account_phone": account, "from": known,
                                                                "text": "before the gap"}))["message_id"]
        fresh_receiver.wait_for(lambda r: len(message_bodies(r, account)) == 1)
        counts_before = admin.ok(admin.get("/sandbox/requests"))["counts"]
    finally:
        admin.close()
    own_server.stop()
    world = SandboxWorld(own_server.state_dir / "sandbox_world.sqlite3")
    try:
        # 100 messages while the server is down: 60 in a chat delivered before, 40 in a chat never seen.
        written = [world.incoming(account, known if n < 60 else new, f"during the gap {n}") for n in range(100)]
        world.force_gap(account)
    finally:
        world.close()
    own_server.start()
    admin = own_server.client(own_server.admin_key)
    try:
        fresh_receiver.wait_for(lambda r: len(message_bodies(r, account)) >= 101, timeout=60)
        wait_idle(admin)
        after = admin.ok(admin.post("/sandbox/incoming", json={"account_phone": account, "from": new,
                                                               "text": "after the gap"}))["message_id"]
        fresh_receiver.wait_for(lambda r: any(b["message_id"] == after for b in message_bodies(r, account)))
        counts = admin.ok(admin.get("/sandbox/requests"))["counts"]
    finally:
        admin.close()
    bodies = message_bodies(fresh_receiver, account)
    assert sorted(b["message_id"] for b in bodies) == [before, *written, after]
    # Each chat in its order (chats are repaired one after another, the most recent dialog first).
    assert [b["message_id"] for b in bodies if b["chat_id"] == known_id] == [before, *written[:60]]
    assert [b["message_id"] for b in bodies if b["chat_id"] == new_id] == [*written[60:], after]
    assert not any(b.get("history") for b in bodies)  # missed live messages, not history: they notify
    assert set(posts_per_event(fresh_receiver, account).values()) == {1}
    assert "difference was too long" in own_server.log_text()
    history_requests = counts.get("GetHistoryRequest", 0) - counts_before.get("GetHistoryRequest", 0)
    dialog_requests = counts.get("GetDialogsRequest", 0) - counts_before.get("GetDialogsRequest", 0)
    print(f"\ngap repair: 100 messages in 2 dialogs with GetDialogs {dialog_requests}, "
          f"GetHistory {history_requests}")
