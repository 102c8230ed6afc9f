"""Incoming messages reach Telethon's event handlers as Telegram pushes them; pts moves so no gap is seen;
missed messages are caught up through updates.getDifference; revocation disconnects the client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from telethon import errors
from telethon.tl import functions

from crm_server.sandbox import SandboxWorld, UnknownAccount, UnknownUser, install, uninstall
from crm_server.sandbox import handlers as sandbox_handlers
from crm_server.telegram import telethon_seam

from .client_steps import collect_incoming, log_in, wait_for

ACCOUNT = "+79993330001"


async def test_message_from_known_sender_fires_new_message(world, make_client):
    client = make_client()
    await log_in(client, ACCOUNT)
    alice = world.create_user("+79990000001", username="alice", first_name="Alice")
    await client.get_input_entity("@alice")  # the account now knows Alice: Telegram sends the short form
    received = collect_incoming(client)

    message_id = world.incoming(ACCOUNT, "@alice", "hi from Alice")
    await wait_for(lambda: len(received) == 1)

    event = received[0]
    sender = await event.get_sender()
    assert (event.sender_id, event.raw_text, event.id) == (alice, "hi from Alice", message_id)
    assert sender.username == "alice"
    assert event.is_private and not event.out


async def test_message_from_unknown_sender_carries_the_user(world, make_client):
    client = make_client()
    await log_in(client, ACCOUNT)
    bob = world.create_user("+79990000002", username="bob", first_name="Bob", last_name="Stone")
    received = collect_incoming(client)

    world.incoming(ACCOUNT, "+79990000002", "hi from Bob")
    await wait_for(lambda: len(received) == 1)

    event = received[0]
    # No extra request needed: the push itself was Updates(users=[Bob], ...), as Telegram sends it.
    assert event.sender is not None
    assert (event.sender_id, event.sender.username, event.sender.last_name) == (bob, "bob", "Stone")
    assert event.raw_text == "hi from Bob"


async def test_incoming_from_another_thread_reaches_the_client(world, make_client):
    client = make_client()
    await log_in(client, ACCOUNT)
    world.create_user("+79990000001", username="alice")
    received = collect_incoming(client)

    # Starlette runs sync routes in a thread pool: the push must hop onto the client's loop safely.
    await asyncio.to_thread(world.incoming, ACCOUNT, "@alice", "from a worker thread")
    await wait_for(lambda: len(received) == 1)

    assert received[0].raw_text == "from a worker thread"


async def test_closing_the_world_drops_its_connected_sessions(world_path: Path, make_client):
    server = SandboxWorld(world_path)
    install(server)
    try:
        client = make_client()
        await log_in(client, ACCOUNT)
    finally:
        uninstall()

    server.close()

    with pytest.raises(ConnectionError):
        await asyncio.wait_for(client.disconnected, timeout=3)
    with SandboxWorld(world_path) as other:  # a later world on the file has nobody stale to push to
        other.create_user("+79990000001", username="alice")
        assert other.incoming(ACCOUNT, "@alice", "nobody listening") == 1


async def test_updates_move_pts_without_spurious_get_difference(world, make_client):
    client = make_client()
    await log_in(client, ACCOUNT)
    world.create_user("+79990000001", username="alice")
    world.create_user("+79990000002", username="bob")
    await client.get_input_entity("@alice")
    received = collect_incoming(client)
    differences_before = world.request_counts["GetDifferenceRequest"]

    for n in range(10):
        world.incoming(ACCOUNT, "@alice", f"a{n}")
        world.incoming(ACCOUNT, "@bob", f"b{n}")
        await client.send_message("@alice", f"reply {n}")
    await wait_for(lambda: len(received) == 20)

    assert world.request_counts["GetDifferenceRequest"] == differences_before
    assert sorted(e.raw_text for e in received) == sorted([f"a{n}" for n in range(10)] + [f"b{n}" for n in range(10)])


async def test_two_accounts_talk_to_each_other(world, make_client):
    first, second = make_client(), make_client()
    await log_in(first, ACCOUNT)
    await log_in(second, "+79993330002")
    world.create_user("+79993330002", username="second_account")
    received = collect_incoming(second)

    await first.send_message("@second_account", "hello, other account")
    await wait_for(lambda: len(received) == 1)

    assert received[0].sender_id == world.user_id_of(ACCOUNT)
    assert received[0].raw_text == "hello, other account"


async def test_catch_up_delivers_messages_injected_while_disconnected(file_world, world_path: Path, make_client):
    client = make_client(catch_up=True)
    await log_in(client, ACCOUNT)
    file_world.create_user("+79990000001", username="alice")
    session = client.session  # keeps the update state (pts) Telethon saved at disconnect
    await client.disconnect()

    # Another "process": its own world object on the same file, while the account is offline.
    with SandboxWorld(world_path) as injector:
        injector.incoming(ACCOUNT, "@alice", "while you were away 1")
        injector.incoming(ACCOUNT, "+79990000001", "while you were away 2")
    differences_before = file_world.request_counts["GetDifferenceRequest"]

    reconnected = make_client(session, catch_up=True)
    received = collect_incoming(reconnected)
    await reconnected.connect()
    await wait_for(lambda: len(received) == 2)

    assert [e.raw_text for e in received] == ["while you were away 1", "while you were away 2"]
    assert received[0].sender.username == "alice"
    assert file_world.request_counts["GetDifferenceRequest"] > differences_before


async def test_long_catch_up_arrives_in_difference_slices(world, make_client, monkeypatch):
    monkeypatch.setattr(sandbox_handlers, "DIFFERENCE_LIMIT", 4)
    client = make_client(catch_up=True)
    await log_in(client, ACCOUNT)
    world.create_user("+79990000001", username="alice")
    session = client.session
    await client.disconnect()
    for n in range(11):
        world.incoming(ACCOUNT, "@alice", f"missed {n}")

    reconnected = make_client(session, catch_up=True)
    received = collect_incoming(reconnected)
    await reconnected.connect()
    await wait_for(lambda: len(received) == 11)

    assert sorted(int(e.raw_text.split()[1]) for e in received) == list(range(11))


async def test_revoke_fails_the_next_request(world, make_client):
    client = make_client()
    await log_in(client, ACCOUNT)

    world.revoke(ACCOUNT)

    with pytest.raises(errors.AuthKeyUnregisteredError):
        await client(functions.updates.GetStateRequest())


async def test_revoke_disconnects_an_idle_client(world, make_client):
    client = make_client()
    await log_in(client, ACCOUNT)

    world.revoke(ACCOUNT)
    with pytest.raises(errors.AuthKeyUnregisteredError):
        await asyncio.wait_for(client.disconnected, timeout=3)

    assert not client.is_connected()
    await client.disconnect()
    await client.connect()  # the key is still known, just no longer logged in
    assert await client.get_me() is None  # (is_user_authorized() would answer Telethon's cached True)


async def test_dropped_connection_resolves_disconnected_with_an_error(world, make_client):
    client = make_client()
    await log_in(client, ACCOUNT)

    assert world.drop_connections(ACCOUNT) == 1
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(client.disconnected, timeout=3)

    await client.disconnect()
    await client.connect()  # a reconnect with the same session is still logged in
    assert await client.is_user_authorized() is True


async def test_incoming_rejects_an_unknown_sender_and_waits_in_the_dialogs_of_an_account_not_logged_in(
        world, make_client):
    alice = world.create_user("+79990000001", username="alice")
    with pytest.raises(UnknownUser):
        world.incoming("+79990009999", "@nobody", "hello")
    with pytest.raises(UnknownAccount):
        world.sent("+79990009999")  # the refused message made no account
    for n in range(3):
        world.incoming(ACCOUNT, "@alice", f"before the login {n}")

    client = make_client()
    received = collect_incoming(client)
    await log_in(client, ACCOUNT)
    dialogs = await client.get_dialogs()
    history = await client.get_messages("@alice", limit=10)

    assert [d.entity.id for d in dialogs] == [alice]
    assert [m.raw_text for m in history] == [f"before the login {n}" for n in (2, 1, 0)]
    assert received == []  # history, not updates: a new client starts from the current pts


async def test_a_forced_gap_answers_difference_too_long_once(world, make_client):
    client = make_client(catch_up=True)
    await log_in(client, ACCOUNT)
    world.create_user("+79990000001", username="alice")
    session = client.session
    await client.disconnect()
    world.incoming(ACCOUNT, "@alice", "lost in the gap")
    world.force_gap(ACCOUNT)

    reconnected = make_client(session, catch_up=True)
    received = collect_incoming(reconnected)
    await reconnected.connect()
    account_pts = world.pts(world.user_id_of(ACCOUNT))
    # Until the client has applied the answer (it then holds the account's pts), a push would be skipped as
    # "being fetched by the difference", as with Telegram.
    await wait_for(lambda: getattr(telethon_seam.update_state(reconnected), "pts", None) == account_pts)
    assert world.request_counts["GetDifferenceRequest"] >= 1
    world.incoming(ACCOUNT, "@alice", "after the gap")
    await wait_for(lambda: len(received) == 1)

    assert [e.raw_text for e in received] == ["after the gap"]  # what the gap held is for gap repair to fetch
    assert telethon_seam.update_state(reconnected).pts == world.pts(world.user_id_of(ACCOUNT))
