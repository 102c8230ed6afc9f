"""A bulk injection (`SandboxWorld.incoming_many`) reaches Telethon as the very updates one `incoming` call per
message pushes, in list order, and is written all or nothing."""

from __future__ import annotations

import pytest
from telethon import events
from telethon.tl import types

from crm_server.sandbox import SandboxWorld
from crm_server.sandbox.errors import IncomingItemError, UnknownUser
from crm_server.sandbox.world import SimIncoming

from .client_steps import collect_incoming, log_in, wait_for

SINGLE_ACCOUNT = "+79993340001"
BULK_ACCOUNT = "+79993340002"


def raw_updates(client) -> list[object]:
    """Every update object Telethon's update loop hands to event handlers, as pushed."""
    seen: list[object] = []

    async def on_raw(update: object) -> None:
        seen.append(update)

    client.add_event_handler(on_raw, events.Raw)
    return seen


def shape(update: object) -> tuple:
    """What an update says, without what differs between two accounts (their ids, dates)."""
    if isinstance(update, types.UpdateShortMessage):
        return ("UpdateShortMessage", update.id, update.message, update.pts, update.pts_count, update.out)
    if isinstance(update, types.UpdateNewMessage):
        message = update.message
        return ("UpdateNewMessage", message.id, message.message, update.pts, update.pts_count, message.out)
    return (type(update).__name__,)


async def test_a_bulk_pushes_the_same_updates_as_one_call_per_message_in_order(world: SandboxWorld, make_client):
    single, bulk = make_client(), make_client()
    await log_in(single, SINGLE_ACCOUNT)
    await log_in(bulk, BULK_ACCOUNT)
    alice = world.create_user("+79990001001", username="bulk_alice", first_name="Alice")
    world.create_user("+79990001002", username="bulk_bob", first_name="Bob")
    await single.get_input_entity("@bulk_alice")  # Alice is known, Bob is not: both push shapes occur
    await bulk.get_input_entity("@bulk_alice")
    single_updates, bulk_updates = raw_updates(single), raw_updates(bulk)
    single_events, bulk_events = collect_incoming(single), collect_incoming(bulk)
    plan = [("@bulk_alice", "one"), ("+79990001002", "two"), ("@bulk_alice", "three"), ("+79990001002", "four"),
            (alice, "five")]

    single_ids = [world.incoming(SINGLE_ACCOUNT, sender, text) for sender, text in plan]
    bulk_ids = world.incoming_many([SimIncoming(BULK_ACCOUNT, sender, text) for sender, text in plan])
    await wait_for(lambda: len(single_events) == len(plan) and len(bulk_events) == len(plan))

    assert bulk_ids == single_ids == [1, 2, 3, 4, 5]
    assert [shape(update) for update in bulk_updates] == [shape(update) for update in single_updates]
    assert {type(update).__name__ for update in bulk_updates} == {"UpdateShortMessage", "UpdateNewMessage"}
    assert [(event.raw_text, event.id) for event in bulk_events] == [(text, index + 1)
                                                                     for index, (_, text) in enumerate(plan)]
    assert [event.sender_id for event in bulk_events] == [event.sender_id for event in single_events]


async def test_a_bulk_with_one_unknown_sender_writes_nothing_and_names_it(world: SandboxWorld, make_client):
    client = make_client()
    await log_in(client, BULK_ACCOUNT)
    world.create_user("+79990001003", username="bulk_carol")
    received = collect_incoming(client)

    with pytest.raises(IncomingItemError) as refused:
        world.incoming_many([SimIncoming(BULK_ACCOUNT, "@bulk_carol", "fine"),
                             SimIncoming(BULK_ACCOUNT, "@bulk_carol", "fine too"),
                             SimIncoming(BULK_ACCOUNT, "@nobody_here", "refused")])
    assert refused.value.index == 2 and isinstance(refused.value.error, UnknownUser)
    with pytest.raises(IncomingItemError) as empty:
        world.incoming_many([SimIncoming(BULK_ACCOUNT, "@bulk_carol", "fine"),
                             SimIncoming(BULK_ACCOUNT, "@bulk_carol", "")])
    assert empty.value.index == 1
    with pytest.raises(IncomingItemError) as itself:
        world.incoming_many([SimIncoming(BULK_ACCOUNT, "@bulk_carol", "fine"),
                             SimIncoming(BULK_ACCOUNT, BULK_ACCOUNT, "to myself")])
    assert itself.value.index == 1

    assert world.incoming_many([SimIncoming(BULK_ACCOUNT, "@bulk_carol", "after")]) == [1]  # nothing before it
    await wait_for(lambda: len(received) == 1)
    assert received[0].raw_text == "after"
