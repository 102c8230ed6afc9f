"""Batched delivery through a real crm_server process: connect's `batch` (validated, kept, turned off), every event
type and media in batches on a real socket (the media URL serves the file), and a crash while a batch waits for
its answer: the restarted server posts those events again."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from crm_server.webhooks.events import EVENT_TYPES
from tests.crm_server.server_process import CrmClient, CrmServerProcess, admin_client, new_phone, running_server
from tests.helpers.receiver import Received, Receiver, batch_answers

PROJECT = "2b7e1c9a-6f3d-4a5b-8c2e-0000000000b7"
SECRET = "batched-delivery-secret"
SERVER_ENV = {
    "CRM_ALLOW_PRIVATE_WEBHOOKS": "1",
    "CRM_WEBHOOK_RETRY_FIRST_SECONDS": "0.2",
    "CRM_WEBHOOK_RETRY_MAX_SECONDS": "1",
    "CRM_SEND_BURST": "100",
    "CRM_LEASE_TTL_SECONDS": "2",
    "CRM_WEBHOOK_LEASE_SECONDS": "2",  # a crashed server's batch is posted again soon after the restart
}


@pytest.fixture(scope="module")
def server() -> Iterator[CrmServerProcess]:
    with running_server("batched", SERVER_ENV) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: CrmServerProcess) -> Iterator[CrmClient]:
    with admin_client(server) as client:
        yield client


def connect_body(receiver: Receiver, phone: str, **extra: Any) -> dict[str, Any]:
    return {"project_id": PROJECT, "phone": phone, "webhook_url": receiver.url, "secret": SECRET, **extra}


def events_of(receiver: Receiver, account: str) -> list[dict[str, Any]]:
    """The account's events in arrival order, once per event id."""
    seen: dict[str, dict[str, Any]] = {}
    for item in list(receiver.accepted):
        body = item.json
        if body.get("account_phone") == account:
            for event in body["events"]:
                seen.setdefault(event["event_id"], event)
    return list(seen.values())


def sandbox(admin: CrmClient, route: str, **body: Any) -> dict[str, Any]:
    return admin.ok(admin.post(f"/sandbox/{route}", json=body))  # type: ignore[no-any-return]


def test_connect_validates_keeps_and_turns_off_batch(admin, fresh_receiver) -> None:
    phone = new_phone()
    for bad, field in [({"max_events": 0, "max_wait_ms": 10}, "batch.max_events"),
                       ({"max_events": 501, "max_wait_ms": 10}, "batch.max_events"),
                       ({"max_events": "5", "max_wait_ms": 10}, "batch.max_events"),
                       ({"max_events": 5, "max_wait_ms": -1}, "batch.max_wait_ms"),
                       ({"max_events": 5, "max_wait_ms": 1001}, "batch.max_wait_ms"),
                       ({"max_events": 5}, "batch.max_wait_ms"),
                       (7, "batch")]:
        answer = admin.post("/integration/lovable/connect", json=connect_body(fresh_receiver, phone, batch=bad))
        assert answer.status_code == 422, (bad, answer.text)
        assert answer.json()["field"] == field and answer.json()["success"] is False

    fresh = admin.ok(admin.post("/integration/lovable/connect", json=connect_body(fresh_receiver, phone)))
    assert fresh["batch"] is None  # a new registration without it: one event per POST
    batch = {"max_events": 50, "max_wait_ms": 250}
    made = admin.ok(admin.post("/integration/lovable/connect", json=connect_body(fresh_receiver, phone, batch=batch)))
    assert made["batch"] == batch
    kept = admin.ok(admin.post("/integration/lovable/connect", json=connect_body(fresh_receiver, phone)))
    assert kept["batch"] == batch  # absent on a re-connect: unchanged
    assert admin.account(PROJECT, phone)["webhook"]["batch"] == batch
    off = admin.ok(admin.post("/integration/lovable/connect", json=connect_body(fresh_receiver, phone, batch=None)))
    assert off["batch"] is None and admin.account(PROJECT, phone)["webhook"]["batch"] is None


def test_every_event_type_and_media_arrive_in_signed_batches(admin, fresh_receiver, server) -> None:
    fresh_receiver.script = batch_answers()
    account, client = new_phone(), new_phone()
    alice = admin.user(client, username=f"bt_{client[-6:]}", first_name="Alice")
    admin.ok(admin.post("/integration/lovable/connect", json=connect_body(
        fresh_receiver, account, events=list(EVENT_TYPES), batch={"max_events": 20, "max_wait_ms": 200})))
    admin.login(PROJECT, account)
    photo = b"\xff\xd8\xff" + b"batched photo bytes" * 50
    first = sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="hello")["message_id"]
    sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="",
            media={"kind": "photo", "data_base64": base64.b64encode(photo).decode()})
    sandbox(admin, "edit", account_phone=account, **{"from": client}, message_id=first, text="hello, edited")
    phone_sent = sandbox(admin, "outgoing", account_phone=account, to=client, text="from the phone")["message_id"]
    ours = admin.ok(admin.send(PROJECT, account, client, "through the CRM"))["message_id"]
    sandbox(admin, "read", account_phone=account, **{"from": client}, max_id=ours)
    sandbox(admin, "delete", account_phone=account, message_ids=[phone_sent])
    sandbox(admin, "service-message", account_phone=account,
            text="New login. Dear Bo, we detected a login into your account from a new device on 02/12/2026 at "
                 "00:13:25 UTC.\n\nDevice: Telegram Desktop, Windows 10\nLocation: Berlin, Germany")
    fresh_receiver.wait_for(lambda r: {e["type"] for e in events_of(r, account)} >= set(EVENT_TYPES))

    chat = [e for e in events_of(fresh_receiver, account) if e["chat_id"] == alice]
    assert [e["type"] for e in chat] == ["message", "message", "message.edited", "message.outgoing",
                                         "message.read", "message.deleted"]
    media = chat[1]["media"]
    assert media["kind"] == "photo" and media["size"] == len(photo)
    assert httpx.get(media["url"], timeout=10).content == photo  # no key: a capability URL
    assert chat[1]["file_url"] == media["url"]
    for item in fresh_receiver.accepted:
        assert item.headers["webhook-id"] == item.json["batch_id"]
        # A connect secret without the whsec_ prefix signs with its UTF-8 bytes: the same key, spelled as the spec's.
        assert Webhook("whsec_" + base64.b64encode(SECRET.encode()).decode()).verify(item.body, item.headers)
        assert item.headers["x-lovable-secret"] == SECRET
        assert 1 <= len(item.json["events"]) <= 20
    assert "from the phone" not in server.log_text()
    metrics = admin.get("/metrics").text
    assert metric(metrics, "crm_webhook_batches_total") >= len(fresh_receiver.accepted)
    assert metric(metrics, "crm_webhook_batch_events_count") == metric(metrics, "crm_webhook_batches_total")
    assert metric(metrics, "crm_webhook_batch_events_sum") >= len(events_of(fresh_receiver, account))


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.split(" ")[0].split("{")[0] == name)


def test_a_batch_posted_by_a_server_that_crashed_is_posted_again_after_the_restart(
        admin, fresh_receiver, server) -> None:
    account, client = new_phone(), new_phone()
    admin.user(client, username=f"bk_{client[-6:]}")
    admin.ok(admin.post("/integration/lovable/connect", json=connect_body(
        fresh_receiver, account, batch={"max_events": 10, "max_wait_ms": 100})))
    admin.login(PROJECT, account)
    arrived, release = threading.Event(), threading.Event()
    answer = batch_answers()

    def hold_the_first(item: Received) -> tuple[int, dict[str, str], Any]:
        if not arrived.is_set():
            arrived.set()
            release.wait(20)  # the server dies while this batch waits for its answer
        return answer(item)

    fresh_receiver.script = hold_the_first
    for number in range(3):
        sandbox(admin, "incoming", account_phone=account, **{"from": client}, text=f"crash {number}")
    assert arrived.wait(20)
    server.kill()
    release.set()
    server.start()
    fresh_receiver.wait_for(lambda r: len(r.received) >= 2 and len(events_of(r, account)) == 3)
    texts = [e["text"] for e in events_of(fresh_receiver, account)]
    assert texts == ["crash 0", "crash 1", "crash 2"]
    held = {event["event_id"] for event in fresh_receiver.received[0].json["events"]}
    later = [event["event_id"] for item in fresh_receiver.received[1:] for event in item.json["events"]]
    assert held and held <= set(later)  # what the dead server never heard answered is posted again
    assert admin.account(PROJECT, account)["webhook"]["failed"] == 0
