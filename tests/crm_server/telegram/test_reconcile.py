"""The periodic reconcile: messages Telegram never pushed to crm_server (a client that was not listening) are
fetched per dialog after the last message delivered for it, once, as live messages. Real Telethon on the
sandbox, crm_server's real listener and outbox on a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import select
from telethon import TelegramClient
from telethon.sessions import StringSession

from crm_server.settings import ServerSettings
from crm_server.store.schema import outbox
from crm_server.telegram.history_jobs import HistoryJobs
from crm_server.telegram.states import AccountKey
from crm_server.webhooks.listener import IncomingListener, PollingIntake
from tests.crm_server.sandbox.client_steps import log_in

PROJECT = "5f0c2a6e-1d4b-4e8a-9c3f-0000000000d1"
ACCOUNT = "+79993330088"
ALICE, BOB = "+79990000088", "+79990000089"


async def stored_bodies(store) -> list[dict]:  # type: ignore[no-untyped-def]
    async with store.engine.connect() as connection:
        rows = (await connection.execute(select(outbox.c.payload).order_by(outbox.c.id))).all()
    return [json.loads(row.payload) for row in rows]


async def test_the_periodic_reconcile_fetches_what_was_never_pushed_once(world, store, tmp_path: Path) -> None:
    world.create_user(ALICE, username="alice88")
    world.create_user(BOB, username="bob88")
    client = TelegramClient(StringSession(), 1, "x", flood_sleep_threshold=0)  # no listener: nothing is pushed
    await log_in(client, ACCOUNT)
    key = AccountKey(PROJECT, ACCOUNT)
    listener = IncomingListener(store.outbox, PollingIntake(lambda: None))
    settings = ServerSettings(state_dir=tmp_path, sandbox=True, reconcile_minutes=0.002,  # type: ignore[call-arg]
                              history_requests_per_second=50)

    async def client_of(_: AccountKey) -> TelegramClient:
        return client

    jobs = HistoryJobs(store.history_jobs, store.known_messages, listener, settings, client_of)
    try:
        world.incoming(ACCOUNT, ALICE, "before anything was delivered")
        # Nothing delivered yet: nothing to reconcile from (the past is a history import's, marked history).
        assert await jobs.reconcile(key) == 0
        ours = await client.send_message("@alice88", "sent through the CRM")
        await store.known_messages.remember_sent(PROJECT, ACCOUNT, ours.id, world.user_id_of(ALICE))
        missed = [world.incoming(ACCOUNT, ALICE if n % 2 else BOB, f"missed {n}") for n in range(8)]

        jobs.start(lambda: [key])
        for _ in range(200):
            if len(await stored_bodies(store)) >= 8:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a few more rounds: each finds nothing new
    finally:
        await jobs.stop()
        await listener.drain()
        await client.disconnect()

    bodies = await stored_bodies(store)
    assert sorted(b["message_id"] for b in bodies) == missed
    assert all(b["type"] == "message" and "history" not in b for b in bodies)
    alice = world.user_id_of(ALICE)
    assert [b["message_id"] for b in bodies if b["chat_id"] == alice] == [m for n, m in enumerate(missed) if n % 2]
