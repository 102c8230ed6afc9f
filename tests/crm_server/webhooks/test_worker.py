"""WebhookDelivery against a receiver on a real socket: once each, in order per chat, signed, retried, dead-lettered."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest
from cryptography.fernet import Fernet

from crm_server.webhooks.worker import DeliverySettings, WebhookDelivery
from crm_server.webhooks.policy import RetrySchedule
from crm_server.store.database import Store
from crm_server.store.outbox import OutboxEvent, OutboxTable
from crm_server.store.schema import OutboxState
from crm_server.webhooks.signature import verify
from tests.helpers.waiting import until

PROJECT = "org-delivery"
PHONE = "+79990001122"
SECRET = "s3cret-for-signing"
FAST = RetrySchedule(first_delay=0.1, max_delay=0.5, window=60.0)


@pytest.fixture
async def outbox(store: Store) -> OutboxTable:
    return store.outbox


def events(chats: int, per_chat: int, start: int = 1) -> list[OutboxEvent]:
    made = []
    for number in range(start, start + per_chat):
        for chat in range(chats):
            chat_id = str(1000 + chat)
            made.append(OutboxEvent(
                event_id=f"evt_{chat_id}_{number}", project_id=PROJECT, phone=PHONE, chat_id=chat_id,
                message_id=number, payload={"chat_id": chat_id, "message_id": number, "text": f"m{number}"},
            ))
    return made


async def run_worker(store: Store, outbox: OutboxTable, schedule: RetrySchedule = FAST,
                     concurrency: int = 8) -> tuple[WebhookDelivery, httpx.AsyncClient]:
    http = httpx.AsyncClient(timeout=5.0)
    worker = WebhookDelivery(outbox, store.webhooks, http, schedule, DeliverySettings(concurrency=concurrency))
    await worker.start()
    return worker, http


async def stop_worker(worker: WebhookDelivery, http: httpx.AsyncClient) -> None:
    await worker.stop()
    await http.aclose()


async def test_every_message_arrives_once_in_chat_order_and_signed(store, outbox, receiver) -> None:
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    batch = events(chats=20, per_chat=25)
    assert await outbox.enqueue(batch) == 500
    assert await outbox.enqueue(batch[:10]) == 0  # the same Telegram messages are never enqueued twice
    worker, http = await run_worker(store, outbox)
    try:
        await until(lambda: len(receiver.accepted) >= 500)
        await asyncio.sleep(0.3)
    finally:
        await stop_worker(worker, http)
    ids = receiver.accepted_ids()
    assert len(ids) == 500 and len(set(ids)) == 500
    per_chat: dict[str, list[int]] = {}
    for item in receiver.accepted:
        per_chat.setdefault(item.json["chat_id"], []).append(item.json["message_id"])
        timestamp = int(item.headers["webhook-timestamp"])
        assert item.headers["x-lovable-secret"] == SECRET
        assert verify(SECRET, item.headers["webhook-id"], timestamp, item.body, item.headers["webhook-signature"])
        assert not verify("another-secret", item.headers["webhook-id"], timestamp, item.body,
                          item.headers["webhook-signature"])
    assert all(numbers == sorted(numbers) for numbers in per_chat.values())
    assert (await outbox.health(PROJECT, PHONE)).pending == 0


async def test_unavailable_receiver_gets_everything_after_recovery(store, outbox, receiver) -> None:
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    recover_at = time.time() + 1.0
    receiver.script = lambda item: (503, {}) if time.time() < recover_at else (200, {})
    await outbox.enqueue(events(chats=3, per_chat=10))
    worker, http = await run_worker(store, outbox)
    try:
        await until(lambda: len(receiver.accepted) >= 30)
        health_during = await outbox.health(PROJECT, PHONE)
        await asyncio.sleep(0.3)
    finally:
        await stop_worker(worker, http)
    assert len(receiver.received) > 30  # some answers were 503 and retried
    assert len(set(receiver.accepted_ids())) == len(receiver.accepted) == 30
    assert health_during.last_success_at is not None


async def test_retry_after_is_honoured(store, outbox, receiver) -> None:
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    answers = iter([(429, {"Retry-After": "1"})])
    receiver.script = lambda item: next(answers, (200, {}))
    await outbox.enqueue(events(chats=1, per_chat=1))
    worker, http = await run_worker(store, outbox, RetrySchedule(first_delay=0.1, max_delay=5.0))
    try:
        await until(lambda: len(receiver.accepted) == 1)
    finally:
        await stop_worker(worker, http)
    first, second = receiver.received[0], receiver.received[1]
    assert second.at - first.at >= 0.95


async def test_a_rejected_message_becomes_a_dead_letter_and_can_be_retried(store, outbox, receiver) -> None:
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    rejecting = {"on": True}
    receiver.script = lambda item: (400, {}) if rejecting["on"] and item.json["message_id"] == 2 else (200, {})
    await outbox.enqueue(events(chats=1, per_chat=4))
    worker, http = await run_worker(store, outbox)
    try:
        await until(lambda: len(receiver.accepted) == 3)
        dead = await outbox.list(PROJECT, OutboxState.DEAD)
        assert [row.message_id for row in dead] == [2] and dead[0].state is OutboxState.DEAD
        assert (await outbox.health(PROJECT, PHONE)).dead == 1
        rejecting["on"] = False
        assert await outbox.retry(dead[0].id, "another-project") is False  # tenancy: not theirs
        assert await outbox.retry(dead[0].id, PROJECT) is True
        worker.wake()
        await until(lambda: len(receiver.accepted) == 4)
    finally:
        await stop_worker(worker, http)
    assert [item.json["message_id"] for item in receiver.accepted] == [1, 3, 4, 2]
    assert (await outbox.health(PROJECT, PHONE)).dead == 0


async def test_a_failing_chat_does_not_hold_up_the_others(store, outbox, receiver) -> None:
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    receiver.script = lambda item: (503, {}) if item.json["chat_id"] == "1000" else (200, {})
    await outbox.enqueue(events(chats=3, per_chat=5))
    worker, http = await run_worker(store, outbox)
    try:
        await until(lambda: len(receiver.accepted) == 10)
        await asyncio.sleep(0.5)
    finally:
        await stop_worker(worker, http)
    blocked = [item.json["message_id"] for item in receiver.received if item.json["chat_id"] == "1000"]
    assert blocked and set(blocked) == {1}  # only the head was tried; the rest wait behind it
    assert (await outbox.health(PROJECT, PHONE)).pending == 5


async def test_gone_disables_the_webhook_until_it_is_registered_again(store, outbox, receiver) -> None:
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    gone = {"on": True}
    receiver.script = lambda item: (410, {}) if gone["on"] else (200, {})
    await outbox.enqueue(events(chats=2, per_chat=2))
    worker, http = await run_worker(store, outbox)
    try:
        await until(lambda: len(receiver.received) >= 1)
        await asyncio.sleep(0.5)
        registration = await store.webhooks.get(PROJECT, PHONE)
        assert registration is not None and registration.enabled is False
        tries_while_disabled = len(receiver.received)
        await asyncio.sleep(0.5)
        assert len(receiver.received) == tries_while_disabled
        gone["on"] = False
        await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
        worker.wake()
        await until(lambda: len(receiver.accepted) == 4)
    finally:
        await stop_worker(worker, http)


async def test_unreachable_receiver_is_retried_until_the_window_closes(store, outbox) -> None:
    await store.webhooks.upsert(PROJECT, PHONE, "http://127.0.0.1:9/hook", SECRET)  # nothing listens on port 9
    await outbox.enqueue(events(chats=1, per_chat=1))
    schedule = RetrySchedule(first_delay=0.05, max_delay=0.1, window=0.6)
    worker, http = await run_worker(store, outbox, schedule)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (await outbox.health(PROJECT, PHONE)).dead == 0:
            await asyncio.sleep(0.05)
    finally:
        await stop_worker(worker, http)
    dead = await outbox.list(PROJECT, OutboxState.DEAD)
    assert len(dead) == 1 and dead[0].attempts >= 3
    assert "Connect" in (dead[0].last_error or "")


async def test_several_workers_share_a_postgresql_outbox_without_double_delivery(local_database, receiver) -> None:
    """With the PostgreSQL store every crm_server instance drains the one outbox (FOR UPDATE SKIP LOCKED)."""
    admin = await asyncpg.connect(local_database.admin_url)
    try:
        await admin.execute("DROP DATABASE IF EXISTS crm_outbox_test")
        await admin.execute("CREATE DATABASE crm_outbox_test")
    finally:
        await admin.close()
    base, _ = local_database.admin_url.rsplit("/", 1)
    url = base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/crm_outbox_test"
    session_key = Fernet.generate_key()  # instances share it, as they share the store
    stores = [await Store.open(url, session_key) for _ in range(3)]
    receiver.reset()
    await stores[0].webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    assert await stores[0].outbox.enqueue(events(chats=30, per_chat=20)) == 600
    posts = [0, 0, 0]
    workers = []
    for number, store in enumerate(stores):
        http = httpx.AsyncClient(timeout=5.0)
        count = lambda result, number=number: posts.__setitem__(number, posts[number] + 1)  # noqa: E731
        worker = WebhookDelivery(store.outbox, store.webhooks, http, FAST, DeliverySettings(concurrency=4),
                                 observers=[count])
        await worker.start()
        workers.append((worker, http))
    try:
        await until(lambda: len(receiver.accepted) >= 600, timeout=60)
        await asyncio.sleep(0.5)
    finally:
        for worker, http in workers:
            await stop_worker(worker, http)
        for store in stores:
            await store.close()
    ids = receiver.accepted_ids()
    assert len(ids) == 600 and len(set(ids)) == 600
    per_chat: dict[str, list[int]] = {}
    for item in receiver.accepted:
        per_chat.setdefault(item.json["chat_id"], []).append(item.json["message_id"])
    assert all(numbers == list(range(1, 21)) for numbers in per_chat.values())
    assert all(count > 0 for count in posts), posts  # every instance took part


async def test_disconnecting_right_after_a_delivery_drops_only_what_never_reached_the_webhook(
        store, outbox, receiver) -> None:
    """A row the webhook took is recorded as delivered a moment later; disconnecting in that moment must neither
    drop it as if it were waiting nor count it."""
    from crm_server.webhooks.registrations import WebhookRegistry

    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    await outbox.enqueue(events(chats=1, per_chat=1))
    http = httpx.AsyncClient(timeout=5.0)
    worker = WebhookDelivery(outbox, store.webhooks, http, FAST,
                             DeliverySettings(concurrency=2, record_every_seconds=30.0))
    registry = WebhookRegistry(store.webhooks, outbox, worker)
    await worker.start()
    try:
        await until(lambda: len(receiver.accepted) == 1)
        assert (await outbox.health(PROJECT, PHONE)).pending == 1  # taken, not recorded yet
        assert await registry.disconnect(PROJECT, PHONE) == 0
    finally:
        await stop_worker(worker, http)
    assert (await outbox.list(PROJECT, OutboxState.DELIVERED))[0].message_id == 1  # recorded at the stop


async def test_stopping_as_a_wake_up_lands_ends_the_worker(store, outbox) -> None:
    """Python 3.11's `asyncio.wait_for` drops a cancellation that arrives as its inner wait completes: a worker
    woken (new rows) in the same moment it was stopped went on looping and `stop()` never returned (a teardown hang
    in the media delivery tests, about one run in two on a loaded machine)."""
    for _ in range(20):
        worker, http = await run_worker(store, outbox)
        await asyncio.sleep(0.02)  # the scheduler sleeps until something is due
        worker.wake()
        await asyncio.sleep(0)  # the wake-up lands: the worker's wait is done, its task not resumed yet
        await asyncio.wait_for(stop_worker(worker, http), 5.0)
