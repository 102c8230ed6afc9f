"""IncomingListener with the delivery worker: group commits, update states recorded only behind the commit, and a
chat's new messages handed to its open lane in memory — still once each, in chat order."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Collection

import httpx

from crm_server.webhooks.worker import DeliverySettings, WebhookDelivery
from crm_server.webhooks.policy import RetrySchedule
from crm_server.webhooks.incoming import IncomingMessage
from crm_server.webhooks.listener import IncomingListener, PollingIntake
from crm_server.store.database import Store
from crm_server.store.outbox import Lane, OutboxEvent, OutboxRow, OutboxTable
from tests.helpers.receiver import Receiver
from tests.helpers.waiting import until

PROJECT = "org-listener"
PHONE = "+79990003344"
SECRET = "listener-secret"
FAST = RetrySchedule(first_delay=0.1, max_delay=0.5, window=60.0)


class GatedOutbox(OutboxTable):
    """The real table, with a gate in front of inserts and a count of lane reads."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.engine)
        self.open = asyncio.Event()
        self.open.set()
        self.inserts: list[int] = []
        self.leases = 0

    async def insert(self, events: list[OutboxEvent],
                     leases: dict[Lane, tuple[str, float]] | None = None) -> list[OutboxRow]:
        await self.open.wait()
        self.inserts.append(len(events))
        return await super().insert(events, leases)

    async def lease(self, lane: Lane, owner: str, until: float, limit: int,
                    skip: Collection[int] = ()) -> list[OutboxRow]:
        self.leases += 1
        return await super().lease(lane, owner, until, limit, skip)


def message(chat: int, number: int) -> IncomingMessage:
    return IncomingMessage(
        project_id=PROJECT, account_phone=PHONE, chat_id=chat, message_id=number, from_id=chat,
        from_username=None, from_first_name="Client", from_last_name=None, from_phone=None, text=f"m{number}",
        date=datetime.datetime(2026, 11, 25, tzinfo=datetime.UTC),
    )


async def test_an_update_state_is_recorded_only_once_its_messages_are_committed(store) -> None:
    outbox = GatedOutbox(store)
    woken: list[bool] = []
    listener = IncomingListener(outbox, PollingIntake(lambda: woken.append(True)))
    recorded: list[str] = []

    listener.when_stored("account", lambda: recorded.append("nothing pending"))
    assert recorded == ["nothing pending"]  # nothing handed over: recorded at once

    outbox.open.clear()
    for number in range(1, 4):
        await listener(message(1, number))  # returns before the row is written
    listener.when_stored("account", lambda: recorded.append("after 3"))
    await asyncio.sleep(0.1)
    assert recorded == ["nothing pending"] and await outbox.pending_count() == 0

    outbox.open.set()
    await listener.drain()
    assert recorded == ["nothing pending", "after 3"]
    assert await outbox.pending_count() == 3 and woken
    assert sum(outbox.inserts) == 3


async def test_messages_buffered_while_the_store_is_slow_share_one_insert(store) -> None:
    outbox = GatedOutbox(store)
    listener = IncomingListener(outbox, PollingIntake(lambda: None))
    outbox.open.clear()
    await listener(message(1, 1))
    await asyncio.sleep(0.05)  # the writer took this one and waits at the gate
    for number in range(2, 102):
        await listener(message(1 + number % 5, number))
    outbox.open.set()
    await listener.drain()
    assert outbox.inserts == [1, 100]  # the 100 that came meanwhile: one INSERT


@contextlib.asynccontextmanager
async def fed_worker(store: Store, receiver: Receiver,
                     settings: DeliverySettings) -> AsyncIterator[tuple[GatedOutbox, IncomingListener]]:
    """A delivery worker to the receiver and a listener that hands it new rows, stopped on the way out."""
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    outbox = GatedOutbox(store)
    async with httpx.AsyncClient(timeout=5.0) as http:
        worker = WebhookDelivery(outbox, store.webhooks, http, FAST, settings)
        await worker.start()
        try:
            yield outbox, IncomingListener(outbox, worker)
        finally:
            await worker.stop()


async def test_open_lanes_get_new_messages_in_memory_once_each_in_chat_order(store, receiver) -> None:
    chats, per_chat = 5, 20
    settings = DeliverySettings(concurrency=8, linger_seconds=2.0, record_every_seconds=0.01)
    async with fed_worker(store, receiver, settings) as (outbox, listener):
        for number in range(1, per_chat + 1):
            for chat in range(chats):
                await listener(message(100 + chat, number))
            await asyncio.sleep(0.05)  # messages trickle in: each chat's lane has posted the last one meanwhile
        await listener.drain()
        await until(lambda: len(receiver.accepted) >= chats * per_chat)
        await asyncio.sleep(0.3)
    ids = receiver.accepted_ids()
    assert len(ids) == chats * per_chat and len(set(ids)) == len(ids)
    per: dict[int, list[int]] = {}
    for item in receiver.accepted:
        per.setdefault(item.json["chat_id"], []).append(item.json["message_id"])
    assert all(numbers == list(range(1, per_chat + 1)) for numbers in per.values())
    # The messages went to their chat's open lane without a read of the outbox: one lease per chat here, even with
    # messages arriving while a lane is being leased (without the feed: ~one per message).
    assert outbox.leases < chats * per_chat / 4, outbox.leases
    # And everything delivered is recorded as such.
    assert await outbox.pending_count() == 0


async def test_a_chat_whose_lane_is_open_costs_one_lease_for_all_its_messages(store, receiver) -> None:
    chats, per_chat = 3, 10
    settings = DeliverySettings(concurrency=8, linger_seconds=600.0, record_every_seconds=0.01)
    async with fed_worker(store, receiver, settings) as (outbox, listener):
        for number in range(1, per_chat + 1):
            for chat in range(chats):
                await listener(message(300 + chat, number))
            # Each message is delivered before the chat's next one comes: the lane is idle and open for it.
            await until(lambda: len(receiver.accepted) == chats * number)
    assert outbox.leases == chats  # the first message of each chat; the other 27 were handed over in memory
    assert await outbox.pending_count() == 0


async def test_a_lane_idling_for_its_chat_gives_its_slot_to_a_waiting_chat(store, receiver) -> None:
    # One slot, and a lane would idle for its chat's next message far longer than this test waits.
    settings = DeliverySettings(concurrency=1, linger_seconds=600.0, idle_poll_seconds=600.0)
    async with fed_worker(store, receiver, settings) as (_, listener):
        await listener(message(201, 1))
        await until(lambda: len(receiver.accepted) == 1)
        await listener(message(202, 1))  # another chat, while chat 201's lane holds the only slot
        await until(lambda: len(receiver.accepted) == 2, timeout=20)
        await listener(message(201, 2))
        await until(lambda: len(receiver.accepted) == 3, timeout=20)
    assert [(item.json["chat_id"], item.json["message_id"]) for item in receiver.accepted] == [
        (201, 1), (202, 1), (201, 2)]


async def test_a_busy_chat_keeps_its_lane_past_a_tenure_while_slots_are_free(store, receiver) -> None:
    # Tenures of 10 rows, slots to spare: ending a tenure would send the chat's next rows to the table, to be
    # leased again once the tenure's last ones are recorded (a stall; in `make bench`, of up to 1.3 s).
    per_chat = 35
    settings = DeliverySettings(concurrency=8, lane_batch=10, linger_seconds=600.0, record_every_seconds=0.01)
    async with fed_worker(store, receiver, settings) as (outbox, listener):
        for number in range(1, per_chat + 1):
            await listener(message(401, number))
            await until(lambda: len(receiver.accepted) == number)
    assert [item.json["message_id"] for item in receiver.accepted] == list(range(1, per_chat + 1))
    assert outbox.leases == 1  # the first message's; every later one was handed over in memory
    assert await outbox.pending_count() == 0


async def test_a_busy_chat_still_gives_its_slot_up_after_a_tenure_when_another_chat_waits(store, receiver) -> None:
    # The only slot, held by a chat that never idles: the other chat's message waits for the tenure's end, not
    # for the busy chat to fall silent.
    settings = DeliverySettings(concurrency=1, lane_batch=5, linger_seconds=600.0, record_every_seconds=0.01)
    async with fed_worker(store, receiver, settings) as (_, listener):
        await listener(message(501, 1))
        await until(lambda: len(receiver.accepted) == 1)
        await listener(message(502, 1))  # waits for a slot
        for number in range(2, 21):
            await listener(message(501, number))
            await until(lambda: sum(item.json["chat_id"] == 501 for item in receiver.accepted) == number
                        or any(item.json["chat_id"] == 502 for item in receiver.accepted), timeout=20)
        await until(lambda: len(receiver.accepted) == 21, timeout=20)
    order = [(item.json["chat_id"], item.json["message_id"]) for item in receiver.accepted]
    assert order.index((502, 1)) <= 6, order  # after the busy chat's first tenure (5 rows) at the latest
    assert [number for chat, number in order if chat == 501] == list(range(1, 21))


class CountingOutbox(GatedOutbox):
    """Also counts the scheduler's looks at the outbox."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.looks = 0

    async def due_lanes(self, now: float, limit: int, busy: set[Lane]) -> list[Lane]:
        self.looks += 1
        return await super().due_lanes(now, limit, busy)


async def test_the_scheduler_does_not_poll_the_outbox_while_its_pending_rows_are_in_flight(store, receiver) -> None:
    # A post the receiver holds for a second: its row is pending, and leased to the lane posting it. Counted
    # as due, it made the scheduler look for due chats every round (every few milliseconds) until answered.
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    outbox = CountingOutbox(store)
    settings = DeliverySettings(concurrency=8, linger_seconds=600.0, idle_poll_seconds=600.0)
    async with httpx.AsyncClient(timeout=5.0) as http:
        worker = WebhookDelivery(outbox, store.webhooks, http, FAST, settings)
        await worker.start()
        try:
            listener = IncomingListener(outbox, worker)
            receiver.delay = 1.0
            await listener(message(601, 1))
            await listener.drain()
            await asyncio.sleep(0.2)  # the lane has started and posts
            looks = outbox.looks
            await asyncio.sleep(0.6)  # the post is held
            assert outbox.looks - looks <= 1, outbox.looks - looks
            await until(lambda: len(receiver.accepted) == 1)
        finally:
            await worker.stop()
