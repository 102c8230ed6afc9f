"""The owner's other devices, edits, deletions and read receipts reach Telethon's own event classes as Telegram
pushes them (updateEditMessage, updateDeleteMessages without a chat, updateReadHistory*), with pts that add up, and
through getDifference's other_updates after an offline period."""

from __future__ import annotations

from pathlib import Path

import pytest
from telethon import TelegramClient, events
from telethon.tl import functions

from crm_server.sandbox import SandboxWorld
from crm_server.sandbox.errors import SandboxError
from crm_server.telegram import telethon_seam

from .client_steps import log_in, wait_for

ACCOUNT = "+79993330001"
ALICE = "+79990000001"


def collect(client: TelegramClient) -> list[object]:
    """Every event of the types under test, in dispatch order."""
    seen: list[object] = []

    async def on_event(event: object) -> None:
        seen.append(event)

    for builder in (events.NewMessage(), events.MessageEdited(), events.MessageDeleted(),
                    events.MessageRead(inbox=False), events.MessageRead(inbox=True)):
        client.add_event_handler(on_event, builder)
    return seen


def describe(event: object) -> tuple:
    if isinstance(event, events.MessageEdited.Event):
        return ("edited", event.chat_id, event.message.id, event.raw_text, bool(event.message.out),
                event.message.edit_date is not None)
    if isinstance(event, events.NewMessage.Event):
        return ("new", event.chat_id, event.message.id, event.raw_text, bool(event.message.out))
    if isinstance(event, events.MessageDeleted.Event):
        return ("deleted", event.chat_id, tuple(event.deleted_ids))
    if isinstance(event, events.MessageRead.Event):
        return ("read", event.chat_id, event.max_id, "outbox" if event.outbox else "inbox")
    raise AssertionError(event)


def script(world: SandboxWorld) -> list[tuple]:
    """One of each: the client writes, edits it; the owner writes from the phone; deletes; the client reads;
    the owner reads on the phone. Returns what the account should see, in order."""
    alice = world.user_id_of(ALICE)
    first = world.incoming(ACCOUNT, ALICE, "hello")
    world.edit(ACCOUNT, ALICE, first, "hello, edited")
    mine = world.outgoing(ACCOUNT, ALICE, "answer from the phone")
    world.edit(ACCOUNT, ACCOUNT, mine, "answer, edited")
    world.read(ACCOUNT, ALICE, mine)
    world.read(ACCOUNT, ACCOUNT, first, peer=ALICE)
    world.delete(ACCOUNT, [first])
    return [
        ("new", alice, first, "hello", False),
        ("edited", alice, first, "hello, edited", False, True),
        ("new", alice, mine, "answer from the phone", True),
        ("edited", alice, mine, "answer, edited", True, True),
        ("read", alice, mine, "outbox"),
        ("read", alice, first, "inbox"),
        ("deleted", None, (first,)),
    ]


async def test_each_update_is_pushed_to_a_live_session_with_no_gap(world, make_client):
    client = make_client()
    await log_in(client, ACCOUNT)
    world.create_user(ALICE, username="alice")
    seen = collect(client)
    differences = world.request_counts["GetDifferenceRequest"]

    expected = script(world)
    await wait_for(lambda: len(seen) == len(expected))

    assert [describe(e) for e in seen] == expected
    # Every pts added up: Telethon never had to ask for a difference.
    assert world.request_counts["GetDifferenceRequest"] == differences


async def test_each_update_arrives_through_get_difference_after_being_offline(file_world, world_path: Path,
                                                                             make_client):
    # Telethon alone drops a difference's other_updates (only new messages survive); crm_server mends that.
    telethon_seam.keep_difference_updates()
    client = make_client(catch_up=True)
    await log_in(client, ACCOUNT)
    file_world.create_user(ALICE, username="alice")
    session = client.session
    await client.disconnect()
    expected = script(file_world)
    # While offline the deleted message left the log; its edit with it (Telegram keeps no edit of a deleted message).
    expected = [e for e in expected if not (e[0] in ("new", "edited") and e[2] == expected[0][2])]
    # A message fetched later is as it is now: the phone-sent one comes with its edited text (and its edit too).
    expected = [e[:3] + ("answer, edited",) + e[4:] if e[0] == "new" else e for e in expected]

    reconnected = make_client(session, catch_up=True)
    seen = collect(reconnected)
    await reconnected.connect()
    await wait_for(lambda: len(seen) == len(expected))

    assert sorted(map(describe, seen), key=repr) == sorted(expected, key=repr)
    # New messages first, then the other updates in pts order (crm_server.telegram.telethon_seam).
    kinds = [describe(e)[0] for e in seen]
    assert kinds.index("new") < kinds.index("edited") < kinds.index("deleted")


async def test_read_history_moves_pts_and_the_peer_account_sees_the_read(world, make_client):
    reader, writer = make_client(), make_client()
    await log_in(reader, ACCOUNT)
    await log_in(writer, ALICE)  # the client is an account too: its own session sees its messages read
    world.create_user(ALICE, username="alice")
    world.create_user(ACCOUNT, username="shop")
    seen = collect(writer)
    sent = await writer.send_message("@shop", "read me")
    incoming = world.history(world.user_id_of(ACCOUNT), world.user_id_of(ALICE), 0, 1)[0]

    await reader.send_read_acknowledge(await reader.get_input_entity("@alice"), max_id=incoming.id)
    await wait_for(lambda: any(isinstance(e, events.MessageRead.Event) for e in seen))

    read = [describe(e) for e in seen if isinstance(e, events.MessageRead.Event)]
    assert read == [("read", world.user_id_of(ACCOUNT), sent.id, "outbox")]
    assert world.reads(ACCOUNT) == [{"direction": "inbox", "peer_id": world.user_id_of(ALICE),
                                     "max_id": incoming.id, "date": world.reads(ACCOUNT)[0]["date"]}]
    state = await reader(functions.updates.GetStateRequest())
    assert state.pts == world.pts(world.user_id_of(ACCOUNT))


async def test_service_user_message_and_bad_input(world, make_client):
    client = make_client()
    await log_in(client, ACCOUNT)
    seen = collect(client)
    world.service_message(ACCOUNT, "Login code: 12345. Do not give this code to anyone.")
    await wait_for(lambda: len(seen) == 1)
    assert describe(seen[0])[:2] == ("new", 777000)

    world.create_user(ALICE, username="alice")
    mine = world.outgoing(ACCOUNT, ALICE, "mine")
    with pytest.raises(SandboxError):
        world.edit(ACCOUNT, ALICE, mine, "Alice may not edit the account's message")
    with pytest.raises(SandboxError):
        world.read(ACCOUNT, ACCOUNT, 1)  # an inbox read names the chat
    assert world.delete(ACCOUNT, [999_999]) is None
