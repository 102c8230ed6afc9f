"""Sending through Telethon's own entity resolution: @username, phone via ImportContacts, ids seen before,
and the errors Telegram answers (unknown username, privacy, flood)."""

from __future__ import annotations

import pytest
from telethon import errors
from telethon.tl import functions, types

from .client_steps import collect_incoming, log_in, wait_for

ACCOUNT = "+79992220001"


@pytest.fixture
async def client(world, make_client):
    logged_in = make_client()
    await log_in(logged_in, ACCOUNT)
    return logged_in


async def test_send_to_username_is_recorded_in_the_sent_log(world, client):
    alice = world.create_user("+79990000001", username="alice", first_name="Alice")

    message = await client.send_message("@alice", "hello Alice")

    sent = world.sent(ACCOUNT)
    assert [(s["to_user_id"], s["text"], s["message_id"]) for s in sent] == [(alice, "hello Alice", message.id)]
    assert sent[0]["date"].endswith("+00:00")


async def test_send_to_phone_after_import_contacts(world, client):
    pat = world.create_user("+79990000002", first_name="Pat")
    imported = await client(
        functions.contacts.ImportContactsRequest(
            [types.InputPhoneContact(client_id=7, phone="+79990000002", first_name="Pat", last_name="")]
        )
    )

    await client.send_message("+79990000002", "hi Pat")

    assert [(c.user_id, c.client_id) for c in imported.imported] == [(pat, 7)]
    assert imported.users[0].phone == "79990000002"  # Telegram sends phones as digits, without "+"
    assert world.sent(ACCOUNT)[0]["to_user_id"] == pat


async def test_import_of_unknown_phone_imports_nobody(world, client):
    imported = await client(
        functions.contacts.ImportContactsRequest([types.InputPhoneContact(1, "+79990009999", "No", "Body")])
    )

    assert imported.imported == [] and imported.users == []


async def test_send_to_numeric_id_seen_before(world, client):
    bob = world.create_user("+79990000003", username="bob")
    received = collect_incoming(client)
    world.incoming(ACCOUNT, "@bob", "write me back")
    await wait_for(lambda: len(received) == 1)

    await client.send_message(bob, "back to you")

    assert world.sent(ACCOUNT)[-1]["to_user_id"] == bob


async def test_numeric_id_never_seen_cannot_be_resolved(world, client):
    stranger = world.create_user("+79990000004")

    with pytest.raises(ValueError):
        await client.send_message(stranger, "who are you")


async def test_unknown_username_raises(world, client):
    with pytest.raises(ValueError, match="nobody_here"):
        await client.send_message("@nobody_here", "hello?")
    with pytest.raises(errors.UsernameNotOccupiedError):
        await client(functions.contacts.ResolveUsernameRequest("nobody_here"))


async def test_privacy_restricted_user_refuses_messages(world, client):
    world.create_user("+79990000005", username="shy", privacy_restricted=True)

    with pytest.raises(errors.UserPrivacyRestrictedError):
        await client.send_message("@shy", "hello")
    assert world.sent(ACCOUNT) == []


async def test_flood_fails_the_next_send_with_its_seconds(world, client):
    world.create_user("+79990000006", username="carol")
    await client.send_message("@carol", "before")
    world.flood(ACCOUNT, 42)

    with pytest.raises(errors.FloodWaitError) as raised:
        await client.send_message("@carol", "during")

    assert raised.value.seconds == 42
    assert [s["text"] for s in world.sent(ACCOUNT)] == ["before"]
    assert world.take_flood(world.user_id_of(ACCOUNT)) is None  # reported once, then cleared


async def test_forged_access_hash_is_peer_id_invalid(world, client):
    dave = world.create_user("+79990000007", username="dave")

    with pytest.raises(errors.PeerIdInvalidError):
        await client(functions.messages.SendMessageRequest(types.InputPeerUser(dave, 12345), "x"))


async def test_send_file_by_url_is_a_document_with_its_name(world, client):
    world.create_user("+79990000008", username="erin")

    message = await client.send_file("@erin", "https://example.com/files/report.pdf", caption="the report")

    assert message.file.name == "report.pdf"
    entry = world.sent(ACCOUNT, with_media=True)[0]
    assert entry["text"] == "the report"
    assert entry["media"] == {"kind": "document", "url": "https://example.com/files/report.pdf", "name": "report.pdf"}


async def test_unsupported_request_fails_loudly(world, client):
    with pytest.raises(errors.RPCError, match="METHOD_NOT_SUPPORTED_BY_SANDBOX"):
        await client(functions.messages.GetAllStickersRequest(hash=0))


async def test_a_message_id_the_account_does_not_have_reads_as_none(world, client):
    # Telegram answers messageEmpty (id only) for an id that is gone; Telethon turns it into None.
    alice = world.create_user("+79990000011", username="alice11", first_name="Alice")
    sent = await client.send_message("@alice11", "kept")

    found = await client.get_messages(alice, ids=[sent.id, sent.id + 1000])

    assert found[0].id == sent.id and found[0].message == "kept"
    assert found[1] is None
