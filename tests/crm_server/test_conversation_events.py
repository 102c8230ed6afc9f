"""Conversation events end to end: the sandbox's real TL updates → Telethon's event code → crm_server's outbox →
signed webhooks on a real socket, per type, in chat order, only the types a registration asked for, and after an
offline period through getDifference. Also `/telegram/read` reaching the client's side."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_server.sandbox import SandboxWorld
from crm_server.webhooks.events import EVENT_TYPES
from tests.crm_server.server_process import CrmClient, CrmServerProcess, admin_client, new_phone, running_server
from tests.helpers.receiver import Receiver

PROJECT = "2b7e1c9a-6f3d-4a5b-8c2e-0000000000e1"
SECRET = "conversation-events-secret"
SERVER_ENV = {
    "CRM_ALLOW_PRIVATE_WEBHOOKS": "1",
    "CRM_WEBHOOK_RETRY_FIRST_SECONDS": "0.2",
    "CRM_WEBHOOK_RETRY_MAX_SECONDS": "1",
    "CRM_SEND_BURST": "100",
    "CRM_LEASE_TTL_SECONDS": "3",
}
LOGIN_CODE_TEXT = "Login code: 40718. Do not give this code to anyone, even if they say they are from Telegram!"
NEW_LOGIN_TEXT = ("New login. Dear Anna, we detected a login into your account from a new device on 02/12/2026 at "
                  "00:13:25 UTC.\n\nDevice: Telegram Desktop, Windows 10\nLocation: Berlin, Germany\n\n"
                  "If this wasn't you, you can terminate that session in Settings > Devices.")


@pytest.fixture(scope="module")
def server() -> Iterator[CrmServerProcess]:
    with running_server("events", SERVER_ENV) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: CrmServerProcess) -> Iterator[CrmClient]:
    with admin_client(server) as client:
        yield client


def connect(admin: CrmClient, receiver: Receiver, events: list[str] | None = None, phone: str | None = None) -> str:
    phone = phone or new_phone()
    body: dict[str, Any] = {"project_id": PROJECT, "phone": phone, "webhook_url": receiver.url, "secret": SECRET}
    if events is not None:
        body["events"] = events
    admin.ok(admin.post("/integration/lovable/connect", json=body))
    admin.login(PROJECT, phone)
    return phone


def bodies(receiver: Receiver, account: str) -> list[dict[str, Any]]:
    """The account's events in arrival order, one per event id (redeliveries carry the same body)."""
    seen: dict[str, dict[str, Any]] = {}
    for item in list(receiver.accepted):
        body = item.json
        if body["account_phone"] == account:
            seen.setdefault(body["event_id"], body)
    return list(seen.values())


def sandbox(admin: CrmClient, route: str, **body: Any) -> dict[str, Any]:
    return admin.ok(admin.post(f"/sandbox/{route}", json=body))  # type: ignore[no-any-return]


def wait_idle(admin: CrmClient) -> None:
    """Until nothing of the project waits in the outbox (so what was not posted never will be)."""
    deadline = time.monotonic() + 15
    while admin.ok(admin.get("/webhooks/deliveries", params={"project_id": PROJECT, "state": "pending"}))[
            "deliveries"] and time.monotonic() < deadline:
        time.sleep(0.05)


def test_every_type_arrives_with_its_fields_in_chat_order(admin, fresh_receiver, server) -> None:
    account = connect(admin, fresh_receiver, events=list(EVENT_TYPES))
    client = new_phone()
    alice = admin.user(client, username=f"alice_{client[-6:]}", first_name="Alice")
    first = sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="hello")["message_id"]
    sandbox(admin, "edit", account_phone=account, **{"from": client}, message_id=first, text="hello, edited")
    phone_sent = sandbox(admin, "outgoing", account_phone=account, to=client,
                         text="answer from the phone")["message_id"]
    ours = admin.ok(admin.send(PROJECT, account, client, "answer through the CRM"))["message_id"]
    sandbox(admin, "read", account_phone=account, **{"from": client}, max_id=ours)
    sandbox(admin, "read", account_phone=account, **{"from": account}, peer=client, max_id=first)
    sandbox(admin, "delete", account_phone=account, message_ids=[first, phone_sent])
    fresh_receiver.wait_for(lambda r: len([b for b in bodies(r, account) if b["chat_id"] == alice]) >= 6)

    chat = [b for b in bodies(fresh_receiver, account) if b["chat_id"] == alice]
    assert [b["type"] for b in chat] == ["message", "message.edited", "message.outgoing", "message.read",
                                         "message.read", "message.deleted"]
    message, edited, outgoing, read_out, read_in, deleted = chat
    assert (message["message_id"], message["text"], message["from_id"]) == (first, "hello", alice)
    assert (edited["message_id"], edited["text"], edited["outgoing"]) == (first, "hello, edited", False)
    assert edited["edit_date"].endswith("Z")
    assert (outgoing["message_id"], outgoing["to_id"], outgoing["text"]) == (phone_sent, alice,
                                                                             "answer from the phone")
    assert (read_out["max_id"], read_out["direction"]) == (ours, "outbox")
    assert (read_in["max_id"], read_in["direction"]) == (first, "inbox")
    assert deleted["message_ids"] == sorted([first, phone_sent])
    # The message sent through /telegram/send is never a message.outgoing.
    assert all(b["message_id"] != ours for b in chat if b["type"] == "message.outgoing")
    for body in chat:
        assert body["project_id"] == PROJECT and body["account_phone"] == account
        assert body["timestamp"].endswith("Z") and body["event_id"].startswith("evt_")
    account_events = [b for b in bodies(fresh_receiver, account) if b["chat_id"] is None]
    assert [(b["type"], b["state"], b["reason"]) for b in account_events] == [
        ("account.status", "authorized", "login")]
    assert "answer from the phone" not in server.log_text()


def test_service_user_messages_become_login_alerts_without_their_text(admin, fresh_receiver, server) -> None:
    account = connect(admin, fresh_receiver, events=list(EVENT_TYPES))
    code_id = sandbox(admin, "service-message", account_phone=account, text=LOGIN_CODE_TEXT)["message_id"]
    sandbox(admin, "service-message", account_phone=account, text=NEW_LOGIN_TEXT)
    sandbox(admin, "service-message", account_phone=account, text="Telegram has updated its terms of service.")
    # Deleting the code (Telegram does so, or the owner): it was never delivered, so its chat is unknown.
    sandbox(admin, "delete", account_phone=account, message_ids=[code_id])
    fresh_receiver.wait_for(lambda r: len(bodies(r, account)) >= 4)
    wait_idle(admin)

    events = bodies(fresh_receiver, account)
    alerts = [b for b in events if b["type"] == "account.login_alert"]
    assert [(b["alert"], b["device"], b["location"]) for b in alerts] == [
        ("login_code", None, None), ("new_login", "Telegram Desktop, Windows 10", "Berlin, Germany")]
    assert not [b for b in events if b["type"] == "message"]
    deleted = [b for b in events if b["type"] == "message.deleted"]
    assert [(b["chat_id"], b["message_ids"]) for b in deleted] == [(None, [code_id])]
    raw = b"".join(item.body for item in fresh_receiver.accepted)
    assert b"40718" not in raw and b"terms of service" not in raw and b"Dear Anna" not in raw
    assert "40718" not in server.log_text() and "Dear Anna" not in server.log_text()


def test_one_deletion_over_several_chats_is_an_event_per_chat_and_one_for_what_was_never_delivered(
        admin, fresh_receiver) -> None:
    account, old_client, client = new_phone(), new_phone(), new_phone()
    admin.user(old_client, username=f"hal_{old_client[-6:]}")
    bob = admin.user(client, username=f"ivy_{client[-6:]}")
    # Written before the account logged in: in its dialogs, never delivered by crm_server.
    history = sandbox(admin, "incoming", account_phone=account, **{"from": old_client}, text="old")["message_id"]
    connect(admin, fresh_receiver, events=["message", "message.deleted"], phone=account)
    fresh = sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="new")["message_id"]
    ours = admin.ok(admin.send(PROJECT, account, client, "ours"))["message_id"]
    sandbox(admin, "delete", account_phone=account, message_ids=[history, fresh, ours])
    fresh_receiver.wait_for(lambda r: len(bodies(r, account)) >= 3)
    wait_idle(admin)

    events = bodies(fresh_receiver, account)
    assert [(b["type"], b.get("text")) for b in events if b["type"] == "message"] == [("message", "new")]
    deleted = sorted(((b["chat_id"] or 0), b["message_ids"]) for b in events if b["type"] == "message.deleted")
    assert deleted == [(0, [history]), (bob, sorted([fresh, ours]))]


def test_a_registration_with_default_events_gets_only_messages(admin, fresh_receiver) -> None:
    account = connect(admin, fresh_receiver)
    status = admin.account(PROJECT, account)
    assert status["webhook"]["events"] == ["message"]
    client = new_phone()
    admin.user(client, username=f"bob_{client[-6:]}")
    first = sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="only this")["message_id"]
    sandbox(admin, "edit", account_phone=account, **{"from": client}, message_id=first, text="edited")
    sandbox(admin, "outgoing", account_phone=account, to=client, text="from the phone")
    sandbox(admin, "read", account_phone=account, **{"from": client}, max_id=first)
    sandbox(admin, "delete", account_phone=account, message_ids=[first])
    sandbox(admin, "service-message", account_phone=account, text=LOGIN_CODE_TEXT)
    sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="and this")
    fresh_receiver.wait_for(lambda r: len(bodies(r, account)) >= 2)
    wait_idle(admin)

    assert [(b["type"], b["text"]) for b in bodies(fresh_receiver, account)] == [
        ("message", "only this"), ("message", "and this")]


def test_re_connecting_changes_the_types_and_unknown_types_are_refused(admin, fresh_receiver) -> None:
    account = connect(admin, fresh_receiver)
    body = {"project_id": PROJECT, "phone": account, "webhook_url": fresh_receiver.url, "secret": SECRET}
    refused = admin.post("/integration/lovable/connect", json={**body, "events": ["message", "message.typing"]})
    assert refused.status_code == 422 and refused.json()["field"] == "events"
    empty = admin.post("/integration/lovable/connect", json={**body, "events": []})
    assert empty.status_code == 422 and empty.json()["field"] == "events"
    admin.ok(admin.post("/integration/lovable/connect", json={**body, "events": ["message", "message.read"]}))
    assert admin.account(PROJECT, account)["webhook"]["events"] == ["message", "message.read"]
    admin.ok(admin.post("/integration/lovable/connect", json=body))  # absent: unchanged
    assert admin.account(PROJECT, account)["webhook"]["events"] == ["message", "message.read"]

    client = new_phone()
    admin.user(client, username=f"carl_{client[-6:]}")
    first = sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="hi")["message_id"]
    sandbox(admin, "edit", account_phone=account, **{"from": client}, message_id=first, text="edited")
    sandbox(admin, "read", account_phone=account, **{"from": account}, peer=client, max_id=first)
    fresh_receiver.wait_for(lambda r: len(bodies(r, account)) >= 2)
    wait_idle(admin)
    assert [b["type"] for b in bodies(fresh_receiver, account)] == ["message", "message.read"]


def test_a_type_dropped_before_its_event_was_posted_is_never_posted(admin, fresh_receiver) -> None:
    account = connect(admin, fresh_receiver, events=["message", "message.read"])
    client = new_phone()
    admin.user(client, username=f"gil_{client[-6:]}")
    first = sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="hi")["message_id"]
    fresh_receiver.wait_for(lambda r: len(bodies(r, account)) == 1)
    admin.ok(admin.post("/integration/lovable/pause", json={"project_id": PROJECT, "phone": account, "paused": True}))
    sandbox(admin, "read", account_phone=account, **{"from": account}, peer=client, max_id=first)
    sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="after the read")
    deadline = time.monotonic() + 10
    while admin.account(PROJECT, account)["webhook"]["pending"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Re-connecting resumes, now without message.read: the waiting read is done with, never posted.
    admin.ok(admin.post("/integration/lovable/connect", json={
        "project_id": PROJECT, "phone": account, "webhook_url": fresh_receiver.url, "secret": SECRET,
        "events": ["message"]}))
    fresh_receiver.wait_for(lambda r: len(bodies(r, account)) == 2)
    wait_idle(admin)
    assert [b["type"] for b in bodies(fresh_receiver, account)] == ["message", "message"]
    delivered = admin.ok(admin.get("/webhooks/deliveries", params={"project_id": PROJECT, "state": "delivered",
                                                                    "limit": 1000}))["deliveries"]
    skipped = [d for d in delivered if d["phone"] == account and d["last_status"] == 0]
    assert len(skipped) == 1 and skipped[0]["chat_id"] == str(admin.user(client))


def test_a_revoked_session_is_an_account_status_event(admin, fresh_receiver) -> None:
    account = connect(admin, fresh_receiver, events=["account.status"])
    sandbox(admin, "revoke", account_phone=account)
    fresh_receiver.wait_for(lambda r: len(bodies(r, account)) == 2)
    assert [(b["type"], b["state"], b["reason"]) for b in bodies(fresh_receiver, account)] == [
        ("account.status", "authorized", "login"), ("account.status", "logged_out", "revoked")]


def test_mark_read_reaches_the_clients_side(admin, fresh_receiver) -> None:
    account = connect(admin, fresh_receiver)
    client = new_phone()
    user_id = admin.user(client, username=f"dana_{client[-6:]}")
    first = sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="did you read this?")
    read = admin.post("/telegram/read", json={"project_id": PROJECT, "phone": account, "chat": client,
                                              "max_id": first["message_id"]})
    assert admin.ok(read) == {"status": "read"}
    reads = admin.ok(admin.get("/sandbox/reads", params={"account_phone": account}))
    assert [(r["direction"], r["peer_id"], r["max_id"]) for r in reads] == [("inbox", user_id, first["message_id"])]

    bad = admin.post("/telegram/read", json={"project_id": PROJECT, "phone": account, "chat": client, "max_id": -1})
    assert bad.status_code == 422 and bad.json()["field"] == "max_id"
    missing = admin.post("/telegram/read", json={"project_id": PROJECT, "phone": account, "max_id": 1})
    assert missing.status_code == 422 and missing.json()["field"] == "chat"
    unknown = admin.post("/telegram/read", json={"project_id": PROJECT, "phone": new_phone(), "chat": client,
                                                 "max_id": 1})
    assert unknown.status_code == 404 and unknown.json()["code"] == "ACCOUNT_NOT_FOUND"
    nobody = admin.post("/telegram/read", json={"project_id": PROJECT, "phone": account, "chat": "@nobody_here_x",
                                                "max_id": 1})
    assert nobody.status_code == 422 and nobody.json()["code"] == "RECIPIENT_NOT_FOUND"


def test_phone_sent_and_edited_media_arrive_through_the_media_pipeline(admin, fresh_receiver) -> None:
    account = connect(admin, fresh_receiver, events=list(EVENT_TYPES))
    client = new_phone()
    admin.user(client, username=f"fay_{client[-6:]}")
    data = os.urandom(4000)
    media = {"kind": "document", "file_name": "offer.pdf", "mime_type": "application/pdf",
             "data_base64": base64.b64encode(data).decode()}
    sent = sandbox(admin, "outgoing", account_phone=account, to=client, text="our offer", media=media)["message_id"]
    sandbox(admin, "edit", account_phone=account, **{"from": account}, message_id=sent, text="our offer, v2")
    fresh_receiver.wait_for(lambda r: len([b for b in bodies(r, account) if "media" in b]) >= 2)

    outgoing, edited = [b for b in bodies(fresh_receiver, account) if "media" in b]
    assert (outgoing["type"], outgoing["text"]) == ("message.outgoing", "our offer")
    assert (edited["type"], edited["text"], edited["outgoing"]) == ("message.edited", "our offer, v2", True)
    for body in (outgoing, edited):
        assert body["media"]["file_name"] == "offer.pdf"
        assert body["media"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert httpx.get(body["media"]["url"], timeout=10).content == data  # no API key: a capability URL
        assert body["file_url"] == body["media"]["url"]


@pytest.fixture
def own_server() -> Iterator[CrmServerProcess]:
    with tempfile.TemporaryDirectory(prefix="crm-events-restart-") as directory:
        process = CrmServerProcess(Path(directory), env=SERVER_ENV, name="events-restart")
        try:
            yield process
        finally:
            process.stop()


def test_every_type_is_caught_up_after_the_server_was_down(own_server, fresh_receiver) -> None:
    own_server.start()
    admin = own_server.client(own_server.admin_key)
    try:
        account = connect(admin, fresh_receiver, events=list(EVENT_TYPES))
        client = new_phone()
        alice = admin.user(client, username=f"erin_{client[-6:]}")
        first = sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="before")["message_id"]
        second = sandbox(admin, "incoming", account_phone=account, **{"from": client}, text="to delete")["message_id"]
        ours = admin.ok(admin.send(PROJECT, account, client, "sent through the CRM"))["message_id"]
        fresh_receiver.wait_for(lambda r: len([b for b in bodies(r, account) if b["type"] == "message"]) == 2)
    finally:
        admin.close()
    own_server.stop()
    world = SandboxWorld(own_server.state_dir / "sandbox_world.sqlite3")
    try:
        world.edit(account, client, first, "before, edited offline")
        phone_sent = world.outgoing(account, client, "from the phone, offline")
        world.read(account, client, ours)
        world.read(account, account, first, peer=client)
        world.delete(account, [second])
        world.service_message(account, LOGIN_CODE_TEXT)
    finally:
        world.close()
    own_server.start()
    fresh_receiver.wait_for(lambda r: len(bodies(r, account)) >= 9, timeout=30)

    events = bodies(fresh_receiver, account)
    chat = [(b["type"], b.get("message_id") or b.get("max_id") or b.get("message_ids")) for b in events
            if b["chat_id"] == alice]
    # New messages first, then the other updates in pts order (Telegram's difference keeps them apart).
    assert chat == [("message", first), ("message", second), ("message.outgoing", phone_sent),
                    ("message.edited", first), ("message.read", ours), ("message.read", first),
                    ("message.deleted", [second])]
    assert [b["alert"] for b in events if b["type"] == "account.login_alert"] == ["login_code"]
    assert [b["state"] for b in events if b["type"] == "account.status"] == ["authorized"]
