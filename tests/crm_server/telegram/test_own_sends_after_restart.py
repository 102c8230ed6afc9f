"""A message `/telegram/send` sent is never a `message.outgoing`, also when Telegram tells a client of it again:
after a restart, a catch-up fetches the account's recent messages with their `out` flag, ours among them. Real
Telethon clients on the sandbox, crm_server's real UpdateListener and outbox on a real SQLite store."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import select
from telethon import TelegramClient
from telethon.sessions import StringSession

from crm_server.store.schema import outbox
from crm_server.telegram import telethon_seam
from crm_server.telegram.session import StoreSession
from crm_server.telegram.states import AccountKey
from crm_server.telegram.updates import UpdateListener
from crm_server.webhooks.listener import IncomingListener, PollingIntake
from tests.crm_server.sandbox.client_steps import log_in, wait_for

PROJECT = "5f0c2a6e-1d4b-4e8a-9c3f-0000000000c1"
ACCOUNT = "+79993330077"
ALICE = "+79990000077"


def crm_client(session: StoreSession, listener: UpdateListener) -> TelegramClient:
    """A client as crm_server builds one (catch_up, sequential updates), listened to by `listener`."""
    client = TelegramClient(session, 1, "x", catch_up=True, sequential_updates=True, flood_sleep_threshold=0)
    listener.attach(client, session, AccountKey(PROJECT, ACCOUNT))
    return client


async def stored_bodies(store) -> list[dict]:
    async with store.engine.connect() as connection:
        rows = (await connection.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    return [json.loads(row.payload) for row in rows]


async def test_our_send_fetched_again_is_skipped_and_a_phone_send_is_forwarded(world, store) -> None:
    telethon_seam.keep_difference_updates()
    world.create_user(ALICE, username="alice77")
    alice = world.user_id_of(ALICE)
    intake = IncomingListener(store.outbox, PollingIntake(lambda: None))
    session = StoreSession()
    before = crm_client(session, UpdateListener(intake, known=store.known_messages))
    await log_in(before, ACCOUNT)
    await before.catch_up()  # as after a login: the update loop records the state it starts from
    await wait_for(lambda: session.get_update_state(0) is not None)
    await before.disconnect()  # "the server stops"

    # While it is down, the account sends through crm_server's send path on another connection (a second
    # instance), and its owner writes from the phone.
    sender = TelegramClient(StringSession(), 1, "x", flood_sleep_threshold=0)
    await log_in(sender, ACCOUNT)
    ours = await sender.send_message("@alice77", "through /telegram/send")
    await store.known_messages.remember_sent(PROJECT, ACCOUNT, ours.id, alice)  # what AccountManager.send does
    phone_sent = world.outgoing(ACCOUNT, ALICE, "from the phone")
    await sender.disconnect()

    # "The server restarts": a new listener and client on the stored session catch up.
    after = crm_client(session, UpdateListener(intake, known=store.known_messages))
    await after.connect()
    try:
        await wait_for(lambda: world.request_counts["GetDifferenceRequest"] > 0)
        await asyncio.sleep(0.2)
        await intake.drain()
        bodies = await stored_bodies(store)
    finally:
        await after.disconnect()

    outgoing = [(b["type"], b["message_id"], b["text"]) for b in bodies]
    assert outgoing == [("message.outgoing", phone_sent, "from the phone")]
    known = await store.known_messages.lookup(PROJECT, ACCOUNT, [ours.id, phone_sent])
    assert (known[ours.id].sent, known[phone_sent].sent) == (True, False)
    assert known[phone_sent].chat_id == str(alice)
