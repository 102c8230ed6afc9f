"""Incoming messages end to end: sandbox Telegram → crm_server listener → outbox → signed webhook on a real socket.

Nothing lost, nothing twice (beyond redeliveries under the same webhook-id), per-chat order kept — also across a
SIGKILL mid-burst and for messages that arrived while the server was down.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crm_server.sandbox import SandboxWorld
from crm_server.webhooks.signature import verify
from tests.crm_server.server_process import (
    CrmClient, CrmServerProcess, admin_client, new_phone, run_cli, running_server,
)
from tests.helpers.receiver import Receiver

PROJECT = "2b7e1c9a-6f3d-4a5b-8c2e-000000000001"
OTHER_PROJECT = "2b7e1c9a-6f3d-4a5b-8c2e-000000000002"
SECRET = "inbound-webhook-secret-1"
SERVER_ENV = {
    "CRM_ALLOW_PRIVATE_WEBHOOKS": "1",
    "CRM_WEBHOOK_RETRY_FIRST_SECONDS": "0.2",
    "CRM_WEBHOOK_RETRY_MAX_SECONDS": "1",
    "CRM_SEND_BURST": "100",
    # A killed server's holds on queued messages expire this fast, so the restarted one takes over quickly.
    "CRM_WEBHOOK_LEASE_SECONDS": "2",
    "CRM_LEASE_TTL_SECONDS": "3",
}


@pytest.fixture(scope="module")
def server() -> Iterator[CrmServerProcess]:
    with running_server("inbound", SERVER_ENV) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: CrmServerProcess) -> Iterator[CrmClient]:
    with admin_client(server) as client:
        yield client


def connect_account(admin: CrmClient, receiver: Receiver, project: str = PROJECT) -> str:
    phone = new_phone()
    admin.ok(admin.post("/integration/lovable/connect", json={
        "project_id": project, "phone": phone, "webhook_url": receiver.url, "secret": SECRET,
    }))
    admin.login(project, phone)
    return phone


def make_users(admin: CrmClient, count: int, prefix: str) -> list[str]:
    phones = []
    for number in range(count):
        phone = new_phone()
        admin.user(phone, username=f"{prefix}{number}_{phone[-6:]}", first_name=f"First{number}", last_name="Last")
        phones.append(phone)
    return phones


def write(admin: CrmClient, account: str, sender: str, text: str) -> None:
    admin.ok(admin.post("/sandbox/incoming", json={"account_phone": account, "from": sender, "text": text}))


def unique_by_id(receiver: Receiver) -> dict[str, dict]:
    """The receiver's dedupe: one payload per webhook-id; a redelivery must carry the same body."""
    seen: dict[str, bytes] = {}
    for item in list(receiver.accepted):
        event_id = item.headers["webhook-id"]
        if event_id in seen:
            assert seen[event_id] == item.body, "a redelivery changed the payload"
        seen[event_id] = item.body
    return {event_id: httpx.Response(200, content=body).json() for event_id, body in seen.items()}


def test_an_incoming_message_reaches_the_webhook_signed_and_complete(admin, fresh_receiver) -> None:
    account = connect_account(admin, fresh_receiver)
    sender = new_phone()
    user_id = admin.user(sender, username=f"anna_{sender[-6:]}", first_name="Anna", last_name="Ivanova")
    write(admin, account, sender, "Здравствуйте! Hello")
    fresh_receiver.wait_for(lambda r: len(r.accepted) >= 1)
    item = fresh_receiver.accepted[0]
    body = item.json
    assert body["project_id"] == PROJECT and body["account_phone"] == account
    assert body["from_id"] == user_id and body["chat_id"] == user_id
    assert body["from_username"] == f"anna_{sender[-6:]}"
    assert (body["from_first_name"], body["from_last_name"]) == ("Anna", "Ivanova")
    assert body["from_phone"] == sender
    assert body["text"] == "Здравствуйте! Hello"
    assert body["timestamp"].endswith("Z") and body["message_id"] >= 1
    assert item.headers["webhook-id"] == body["event_id"]
    assert item.headers["x-lovable-secret"] == SECRET
    timestamp = int(item.headers["webhook-timestamp"])
    assert abs(timestamp - time.time()) < 60
    assert verify(SECRET, body["event_id"], timestamp, item.body, item.headers["webhook-signature"])
    assert not verify("not-the-secret", body["event_id"], timestamp, item.body, item.headers["webhook-signature"])


def test_a_registration_without_the_secret_header_is_signed_only(admin, fresh_receiver) -> None:
    """Anyone who saw one delivery carrying the secret itself could sign (forge) the next one."""
    phone = new_phone()
    admin.ok(admin.post("/integration/lovable/connect", json={
        "project_id": PROJECT, "phone": phone, "webhook_url": fresh_receiver.url, "secret": SECRET,
        "secret_header": False,
    }))
    admin.login(PROJECT, phone)
    sender = make_users(admin, 1, "signed")[0]
    write(admin, phone, sender, "signed only")
    fresh_receiver.wait_for(lambda r: len(r.accepted) == 1)
    item = fresh_receiver.accepted[0]
    assert "x-lovable-secret" not in item.headers
    assert verify(SECRET, item.headers["webhook-id"], int(item.headers["webhook-timestamp"]), item.body,
                  item.headers["webhook-signature"])


def test_our_own_outgoing_messages_are_not_forwarded(admin, fresh_receiver) -> None:
    account = connect_account(admin, fresh_receiver)
    sender = make_users(admin, 1, "out")[0]
    write(admin, account, sender, "first")
    fresh_receiver.wait_for(lambda r: len(r.accepted) == 1)
    admin.ok(admin.send(PROJECT, account, sender, "a reply from the manager"))
    write(admin, account, sender, "second")
    fresh_receiver.wait_for(lambda r: len(r.accepted) == 2)
    time.sleep(0.3)
    assert [item.json["text"] for item in fresh_receiver.accepted] == ["first", "second"]


def test_telegrams_service_messages_are_never_forwarded_nor_logged(admin, fresh_receiver, server) -> None:
    """Login codes and new-login alerts come from Telegram's service user (777000): forwarded, every manager of the
    organization would read the account's next login code in a 'client' chat."""
    account = connect_account(admin, fresh_receiver)
    client = make_users(admin, 1, "svc")[0]
    code_text = "Login code: 40718. Do not give this code to anyone, even if they say they are from Telegram!"
    write(admin, account, "777000", code_text)
    write(admin, account, client, "a real client")
    fresh_receiver.wait_for(lambda r: any(item.json["text"] == "a real client" for item in r.accepted))
    deadline = time.monotonic() + 10
    while admin.ok(admin.get("/webhooks/deliveries", params={"project_id": PROJECT, "state": "pending"}))[
            "deliveries"] and time.monotonic() < deadline:
        time.sleep(0.05)
    delivered = admin.ok(admin.get("/webhooks/deliveries", params={"project_id": PROJECT, "state": "delivered",
                                                                    "limit": 1000}))["deliveries"]
    assert "777000" not in {entry["chat_id"] for entry in delivered}
    assert [item.json["text"] for item in fresh_receiver.accepted] == ["a real client"]
    assert "40718" not in server.log_text()


def test_a_paused_registration_keeps_events_pending_and_resuming_delivers_them_in_order(
        admin, fresh_receiver) -> None:
    account = connect_account(admin, fresh_receiver)
    client = make_users(admin, 1, "pause")[0]
    write(admin, account, client, "before the pause")
    fresh_receiver.wait_for(lambda r: len(r.accepted) == 1)
    deadline = time.monotonic() + 10  # delivered rows are recorded a few times a second
    while admin.account(PROJECT, account)["webhook"]["pending"] and time.monotonic() < deadline:
        time.sleep(0.02)
    paused = admin.ok(admin.post("/integration/lovable/pause",
                                 json={"project_id": PROJECT, "phone": account, "paused": True}))
    assert paused == {"status": "paused", "pending": 0}
    for number in range(20):
        write(admin, account, client, f"while paused {number}")
    deadline = time.monotonic() + 10
    while admin.account(PROJECT, account)["webhook"]["pending"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a paused registration must not be posted to, however long it waits
    webhook = admin.account(PROJECT, account)["webhook"]
    assert (webhook["pending"], webhook["failed"], webhook["paused"]) == (20, 0, True)
    assert len(fresh_receiver.accepted) == 1

    resumed = admin.ok(admin.post("/integration/lovable/pause",
                                  json={"project_id": PROJECT, "phone": account, "paused": False}))
    assert resumed == {"status": "active", "pending": 20}
    fresh_receiver.wait_for(lambda r: len(r.accepted) == 21)
    assert [item.json["text"] for item in fresh_receiver.accepted][1:] == [f"while paused {n}" for n in range(20)]


def test_disconnect_removes_the_registration_and_its_waiting_events_and_logs_out_when_asked(
        admin, fresh_receiver) -> None:
    account = connect_account(admin, fresh_receiver)
    client = make_users(admin, 1, "disc")[0]
    admin.ok(admin.post("/integration/lovable/pause", json={"project_id": PROJECT, "phone": account, "paused": True}))
    for number in range(3):
        write(admin, account, client, f"never delivered {number}")
    deadline = time.monotonic() + 10
    while admin.account(PROJECT, account)["webhook"]["pending"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)

    answer = admin.ok(admin.post("/integration/lovable/disconnect", json={"project_id": PROJECT, "phone": account}))
    assert answer == {"status": "disconnected", "dropped": 3}
    assert admin.account(PROJECT, account)["webhook"] is None
    assert admin.account(PROJECT, account)["authorized"] is True  # still logged in: only the registration went
    again = admin.ok(admin.post("/integration/lovable/disconnect",
                                json={"project_id": PROJECT, "phone": account, "logout": True}))
    assert again == {"status": "logged_out", "dropped": 0}
    accounts = admin.ok(admin.get("/telegram/status", params={"project_id": PROJECT}))["accounts"]
    assert account not in {entry["phone"] for entry in accounts}
    missing = admin.post("/integration/lovable/pause", json={"project_id": PROJECT, "phone": account, "paused": True})
    assert missing.status_code == 404 and missing.json()["code"] == "REGISTRATION_NOT_FOUND"
    assert fresh_receiver.accepted == []


def test_500_messages_from_20_users_arrive_once_each_in_chat_order(admin, fresh_receiver) -> None:
    account = connect_account(admin, fresh_receiver)
    senders = make_users(admin, 20, "burst")
    for number in range(25):
        for sender in senders:
            write(admin, account, sender, f"{sender} #{number}")
    fresh_receiver.wait_for(lambda r: len(unique_by_id(r)) >= 500, timeout=60)
    time.sleep(0.3)
    events = unique_by_id(fresh_receiver)
    assert len(events) == 500
    assert len(fresh_receiver.accepted) == 500  # no failure happened, so nothing was redelivered
    per_chat: dict[int, list[int]] = {}
    for item in fresh_receiver.accepted:
        per_chat.setdefault(item.json["chat_id"], []).append(int(item.json["text"].split("#")[1]))
    assert len(per_chat) == 20 and all(numbers == list(range(25)) for numbers in per_chat.values())
    for item in fresh_receiver.accepted[:50]:
        assert verify(SECRET, item.headers["webhook-id"], int(item.headers["webhook-timestamp"]), item.body,
                      item.headers["webhook-signature"])


def test_a_receiver_outage_delays_but_loses_nothing(admin, fresh_receiver) -> None:
    account = connect_account(admin, fresh_receiver)
    senders = make_users(admin, 3, "outage")
    recover_at = time.time() + 2.0
    fresh_receiver.script = lambda item: (503, {}) if time.time() < recover_at else (200, {})
    for number in range(5):
        for sender in senders:
            write(admin, account, sender, f"m{number}")
    status = admin.account(PROJECT, account)
    assert status["webhook"]["pending"] > 0
    fresh_receiver.wait_for(lambda r: len(unique_by_id(r)) == 15, timeout=30)
    time.sleep(0.3)
    assert len(fresh_receiver.accepted) == 15
    assert min(item.at for item in fresh_receiver.accepted) >= recover_at - 0.05
    healthy = admin.account(PROJECT, account)["webhook"]
    assert healthy["pending"] == 0 and healthy["last_success_at"] is not None


def test_a_rejected_message_is_a_dead_letter_until_retried(admin, fresh_receiver, server) -> None:
    account = connect_account(admin, fresh_receiver)
    sender = make_users(admin, 1, "dead")[0]
    rejecting = {"on": True}
    fresh_receiver.script = lambda item: (400, {}) if rejecting["on"] and item.json["text"] == "bad" else (200, {})
    for text in ("one", "bad", "three"):
        write(admin, account, sender, text)
    fresh_receiver.wait_for(lambda r: len(r.accepted) == 2)
    time.sleep(0.3)
    failed = admin.ok(admin.get("/webhooks/deliveries", params={"project_id": PROJECT, "state": "failed"}))
    mine = [row for row in failed["deliveries"] if row["phone"] == account]
    assert len(mine) == 1 and mine[0]["last_status"] == 400
    assert admin.account(PROJECT, account)["webhook"]["failed"] == 1

    other_key = run_cli("keys", "create", "--project", OTHER_PROJECT, state_dir=server.state_dir).strip()
    other = server.client(other_key)
    try:
        listing = other.get("/webhooks/deliveries", params={"project_id": PROJECT, "state": "failed"})
        assert listing.status_code == 403 and listing.json()["code"] == "PROJECT_FORBIDDEN"
        stolen = other.post(f"/webhooks/deliveries/{mine[0]['id']}/retry")
        assert stolen.status_code == 404
    finally:
        other.close()

    rejecting["on"] = False
    retried = admin.post(f"/webhooks/deliveries/{mine[0]['id']}/retry")
    assert retried.status_code == 202
    fresh_receiver.wait_for(lambda r: len(r.accepted) == 3)
    assert [item.json["text"] for item in fresh_receiver.accepted] == ["one", "three", "bad"]
    assert admin.account(PROJECT, account)["webhook"]["failed"] == 0


def test_health_and_metrics_show_the_outbox(admin, fresh_receiver) -> None:
    health = admin.get("/health").json()
    assert health["status"] == "ok" and "outbox_pending" in health
    metrics = admin.get("/metrics").text
    assert "crm_webhook_deliveries_total" in metrics and "crm_webhook_delivery_seconds_bucket" in metrics
    assert "crm_incoming_messages_total" in metrics


def test_bad_delivery_queries_name_the_field(admin) -> None:
    bad_state = admin.get("/webhooks/deliveries", params={"project_id": PROJECT, "state": "lost"})
    assert bad_state.status_code in (400, 422) and bad_state.json()["field"] == "state"
    bad_id = admin.post("/webhooks/deliveries/abc/retry")
    assert bad_id.status_code in (400, 422) and bad_id.json()["field"] == "id"
    unknown = admin.post("/webhooks/deliveries/999999999/retry")
    assert unknown.status_code == 404 and unknown.json()["code"] == "DELIVERY_NOT_FOUND"


def test_a_bulk_injection_reaches_the_webhook_as_one_event_per_message_in_order_per_chat(
        admin, fresh_receiver) -> None:
    account = connect_account(admin, fresh_receiver)
    senders = make_users(admin, 3, "bulk")
    plan = [(senders[index % 3], f"bulk {index} from chat {index % 3}") for index in range(30)]
    answer = admin.ok(admin.post("/sandbox/incoming", json={"messages": [
        {"account_phone": account, "from": sender, "text": text} for sender, text in plan]}))
    assert [item["message_id"] for item in answer["messages"]] == list(range(1, 31))

    fresh_receiver.wait_for(lambda r: len(unique_by_id(r)) >= 30)
    time.sleep(0.3)  # a 31st event would show now
    delivered = sorted(unique_by_id(fresh_receiver).values(), key=lambda body: body["message_id"])
    assert [(body["from_phone"], body["text"]) for body in delivered] == plan
    for sender in senders:  # per chat, the webhook saw them in the order they were written
        arrived = [item.json["text"] for item in fresh_receiver.accepted if item.json["from_phone"] == sender]
        assert list(dict.fromkeys(arrived)) == [text for who, text in plan if who == sender]


def test_a_bulk_injection_is_checked_item_by_item_and_refused_whole(admin, fresh_receiver) -> None:
    account = connect_account(admin, fresh_receiver)
    sender = make_users(admin, 1, "bulkbad")[0]
    good = {"account_phone": account, "from": sender, "text": "fine"}
    cases = [
        ({"messages": []}, "messages"),
        ({"messages": [good] * 1001}, "messages"),
        ({"messages": "all of them"}, "messages"),
        ({"messages": [good, "not an object"]}, "messages[1]"),
        ({"messages": [good, good, {"account_phone": account, "text": "no sender"}]}, "messages[2].from"),
        ({"messages": [{"account_phone": account, "from": sender}]}, "messages[0].text"),
        ({"messages": [good, {**good, "account_phone": "12"}]}, "messages[1].account_phone"),
        ({"messages": [good, {**good, "media": {"kind": "photo", "data_base64": "!!"}}]},
         "messages[1].media.data_base64"),
        ({"messages": [good, {**good, "from": new_phone()}]}, "messages[1].from"),  # no such simulated user
    ]
    for body, field in cases:
        response = admin.post("/sandbox/incoming", json=body)
        assert 400 <= response.status_code < 500, (field, response.text)
        assert response.json()["field"] == field, (field, response.json())
    time.sleep(0.3)
    assert fresh_receiver.accepted == []  # nothing of a refused bulk was written
    assert admin.ok(admin.post("/sandbox/incoming", json={"messages": [good]}))["messages"] == [{"message_id": 1}]
    fresh_receiver.wait_for(lambda r: len(r.accepted) == 1)  # delivered here, not into the next test's receiver


@pytest.fixture
def own_server() -> Iterator[CrmServerProcess]:
    with tempfile.TemporaryDirectory(prefix="crm-restart-") as directory:
        process = CrmServerProcess(Path(directory), env=SERVER_ENV, name="restart")
        try:
            yield process
        finally:
            process.stop()


def test_sigkill_mid_burst_loses_nothing(own_server, fresh_receiver) -> None:
    own_server.start()
    admin = own_server.client(own_server.admin_key)
    try:
        account = connect_account(admin, fresh_receiver)
        senders = make_users(admin, 5, "kill")
        fresh_receiver.delay = 0.02  # a slow receiver: the outbox is still full when the server dies
        for number in range(40):
            for sender in senders:
                write(admin, account, sender, f"k{number}")
        own_server.kill()
    finally:
        admin.close()
    delivered_before = len(unique_by_id(fresh_receiver))
    assert delivered_before < 200  # the kill really interrupted the delivery
    fresh_receiver.delay = 0.0
    own_server.start()
    fresh_receiver.wait_for(lambda r: len(unique_by_id(r)) >= 200, timeout=60)
    time.sleep(0.3)
    events = unique_by_id(fresh_receiver)
    assert len(events) == 200
    per_chat: dict[int, list[int]] = {}
    for event in events.values():
        per_chat.setdefault(event["chat_id"], []).append(int(event["text"][1:]))
    assert all(sorted(numbers) == list(range(40)) for numbers in per_chat.values())


def test_messages_sent_while_the_server_is_down_are_caught_up(own_server, fresh_receiver) -> None:
    own_server.start()
    admin = own_server.client(own_server.admin_key)
    try:
        account = connect_account(admin, fresh_receiver)
        sender = make_users(admin, 1, "offline")[0]
        write(admin, account, sender, "before")
        fresh_receiver.wait_for(lambda r: len(r.accepted) == 1)
    finally:
        admin.close()
    own_server.stop()
    world = SandboxWorld(own_server.state_dir / "sandbox_world.sqlite3")
    try:
        for number in range(10):
            world.incoming(account, sender, f"offline {number}")
    finally:
        world.close()
    own_server.start()
    fresh_receiver.wait_for(lambda r: len(unique_by_id(r)) == 11, timeout=30)
    texts = [event["text"] for event in unique_by_id(fresh_receiver).values()]
    assert texts == ["before"] + [f"offline {number}" for number in range(10)]


def test_catch_up_after_a_crash_fetches_what_arrived_meanwhile(own_server, fresh_receiver) -> None:
    own_server.start()
    admin = own_server.client(own_server.admin_key)
    try:
        account = connect_account(admin, fresh_receiver)
        sender = make_users(admin, 1, "crash")[0]
        for number in range(5):
            write(admin, account, sender, f"online {number}")
        fresh_receiver.wait_for(lambda r: len(r.accepted) == 5)
        own_server.kill()
    finally:
        admin.close()
    world = SandboxWorld(own_server.state_dir / "sandbox_world.sqlite3")
    try:
        for number in range(5):
            world.incoming(account, sender, f"while dead {number}")
    finally:
        world.close()
    own_server.start()
    fresh_receiver.wait_for(lambda r: len(unique_by_id(r)) == 10, timeout=60)
    texts = [event["text"] for event in unique_by_id(fresh_receiver).values()]
    assert texts[-5:] == [f"while dead {number}" for number in range(5)]
