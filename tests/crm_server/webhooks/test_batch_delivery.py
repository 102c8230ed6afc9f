"""Batched delivery against a receiver on a real socket: several events per POST, in order per chat within and across
batches, one signature per batch, and each event's answer acted on alone (delivered, dead letter, retried with its
chat's later events), a failed POST retried or dead-lettered as a whole."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from crm_server.store.database import Store
from crm_server.store.outbox import OutboxEvent, OutboxTable, encode_payload
from crm_server.store.schema import OutboxState
from crm_server.store.webhooks import BatchSettings
from crm_server.webhooks.policy import RetrySchedule
from crm_server.webhooks.posting import DeliveryResult
from crm_server.webhooks.signature import verify
from crm_server.webhooks.worker import DeliverySettings, WebhookDelivery
from tests.helpers.receiver import Received, Receiver, batch_answers
from tests.helpers.waiting import until

PROJECT = "org-batch-delivery"
PHONE = "+79990003344"
SECRET = "s3cret-for-batches"
FAST = RetrySchedule(first_delay=0.1, max_delay=0.3, window=60.0)


def events(chats: int, per_chat: int) -> list[OutboxEvent]:
    made = []
    for number in range(1, per_chat + 1):
        for chat in range(chats):
            chat_id = str(2000 + chat)
            event_id = f"evt_b{chat_id}_{number}"
            made.append(OutboxEvent(
                event_id=event_id, project_id=PROJECT, phone=PHONE, chat_id=chat_id, message_id=number,
                payload={"event_id": event_id, "project_id": PROJECT, "account_phone": PHONE, "chat_id": chat_id,
                         "message_id": number, "text": f"m{number}"},
            ))
    return made


def posted(receiver: Receiver) -> list[dict[str, Any]]:
    """Every event the receiver was sent, in arrival order (redeliveries included)."""
    return [event for item in list(receiver.received) for event in item.json["events"]]


@pytest.fixture
async def delivery(store: Store):
    """Starts a worker (once per test) and stops it at the end; yields the start function."""
    started: list[tuple[WebhookDelivery, httpx.AsyncClient]] = []
    observed: list[DeliveryResult] = []

    async def start(settings: DeliverySettings | None = None) -> WebhookDelivery:
        http = httpx.AsyncClient(timeout=5.0)
        worker = WebhookDelivery(store.outbox, store.webhooks, http, FAST, settings or DeliverySettings(concurrency=8),
                                 observers=[observed.append])
        await worker.start()
        started.append((worker, http))
        return worker

    start.observed = observed  # type: ignore[attr-defined]
    yield start
    for worker, http in started:
        await worker.stop()
        await http.aclose()


def holding_the_first() -> tuple[Callable[[Received], tuple[int, dict[str, str], Any]], threading.Event,
                                  threading.Event]:
    """A receiver script answering batches ok, the first only once `release` is set; `arrived`: it came."""
    arrived, release = threading.Event(), threading.Event()
    ok = batch_answers()

    def hold_the_first(item: Received) -> tuple[int, dict[str, str], Any]:
        if not arrived.is_set():
            arrived.set()
            release.wait(10)
        return ok(item)

    return hold_the_first, arrived, release


async def register(store: Store, receiver: Receiver, max_events: int, max_wait_ms: int) -> None:
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET,
                                batch=BatchSettings(max_events=max_events, max_wait_ms=max_wait_ms))


async def settled(outbox: OutboxTable, accepted: Callable[[], bool]) -> None:
    """Until `accepted()` and nothing of the account is pending any more."""
    await until(accepted)
    for _ in range(500):
        if (await outbox.health(PROJECT, PHONE)).pending == 0:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("rows still pending")


async def test_mixed_chats_keep_their_order_across_batches_never_larger_than_max_events(
        store, receiver, delivery) -> None:
    await register(store, receiver, max_events=7, max_wait_ms=50)
    ok = batch_answers()

    def slow(item: Received) -> tuple[int, dict[str, str], Any]:
        # While a batch is answered, the lanes' next rows wait together: batches mix chats whatever the timing
        # (posted at once when nothing is in flight, a batch could otherwise hold one chat's rows only).
        time.sleep(0.03)
        return ok(item)

    receiver.script = slow
    enqueued = events(chats=5, per_chat=12)
    await store.outbox.enqueue(enqueued)
    await delivery()
    await settled(store.outbox, lambda: len(posted(receiver)) >= 60)

    batches = [item.json for item in receiver.received]
    assert all(1 <= len(batch["events"]) <= 7 for batch in batches)
    assert len(batches) >= 60 // 7
    assert any(len({event["chat_id"] for event in batch["events"]}) > 1 for batch in batches)  # chats mix
    sent = posted(receiver)
    assert Counter(event["event_id"] for event in sent) == Counter(event.event_id for event in enqueued)
    per_chat: dict[str, list[int]] = {}
    for event in sent:
        per_chat.setdefault(event["chat_id"], []).append(event["message_id"])
    assert all(numbers == list(range(1, 13)) for numbers in per_chat.values())
    for batch in batches:
        assert batch["project_id"] == PROJECT and batch["account_phone"] == PHONE
        assert batch["batch_id"].startswith("batch_")
    # Each event of a batch is byte for byte the body its single POST would have.
    by_id = {event.event_id: encode_payload(event.payload) for event in enqueued}
    raw = receiver.received[0].body.decode()
    assert all(by_id[event["event_id"]] in raw for event in batches[0]["events"])
    delivered = await store.outbox.list(PROJECT, OutboxState.DELIVERED, limit=100)
    assert len(delivered) == 60 and {row.last_status for row in delivered} == {200}
    results = delivery.observed
    assert results and all(result.batch_events is not None and result.batch_events <= 7 for result in results)


async def test_a_partial_batch_still_goes_out_after_max_wait(store, receiver, delivery) -> None:
    await register(store, receiver, max_events=100, max_wait_ms=200)
    receiver.script = batch_answers()
    await store.outbox.enqueue(events(chats=3, per_chat=1))
    await delivery()
    await settled(store.outbox, lambda: len(posted(receiver)) == 3)
    assert all(len(item.json["events"]) < 100 for item in receiver.received)


async def test_the_batch_is_signed_once_under_its_batch_id(store, receiver, delivery) -> None:
    secret = "whsec_" + base64.b64encode(b"b" * 24).decode()
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, secret, batch=BatchSettings(10, 50))
    receiver.script = batch_answers()
    await store.outbox.enqueue(events(chats=2, per_chat=2))
    await delivery()
    await settled(store.outbox, lambda: len(posted(receiver)) == 4)
    for item in receiver.received:
        headers = item.headers
        assert headers["webhook-id"] == item.json["batch_id"]
        assert headers["x-lovable-secret"] == secret
        assert Webhook(secret).verify(item.body, headers) == json.loads(item.body)
        assert not verify("whsec_" + base64.b64encode(b"x" * 24).decode(), headers["webhook-id"],
                          headers["webhook-timestamp"], item.body, headers["webhook-signature"])


async def test_without_secret_header_a_batch_carries_only_the_signature(store, receiver, delivery) -> None:
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET, secret_header=False,
                                batch=BatchSettings(10, 20))
    receiver.script = batch_answers()
    await store.outbox.enqueue(events(chats=1, per_chat=2))
    await delivery()
    await settled(store.outbox, lambda: len(posted(receiver)) == 2)
    assert all("x-lovable-secret" not in item.headers for item in receiver.received)


async def test_one_rejected_event_alone_is_a_dead_letter(store, receiver, delivery) -> None:
    await register(store, receiver, max_events=20, max_wait_ms=100)
    bad = "evt_b2000_2"
    receiver.script = batch_answers(lambda event: {"ok": False, "retry": False,
                                               "error": {"code": "INVALID_EVENT", "message": "secret words here"}}
                                if event["event_id"] == bad else {"ok": True})
    await store.outbox.enqueue(events(chats=2, per_chat=4))
    await delivery()
    await settled(store.outbox, lambda: len(posted(receiver)) >= 8)
    dead = await store.outbox.list(PROJECT, OutboxState.DEAD)
    assert [row.event_id for row in dead] == [bad]
    assert dead[0].last_error == "batch result: rejected INVALID_EVENT"  # its code, never its message
    assert len(await store.outbox.list(PROJECT, OutboxState.DELIVERED)) == 7  # its chat's later events too
    assert Counter(event["event_id"] for event in posted(receiver))[bad] == 1


async def test_retry_for_one_event_resends_it_and_its_chats_later_events_only(store, receiver, delivery) -> None:
    await register(store, receiver, max_events=20, max_wait_ms=200)
    answered: Counter[str] = Counter()

    def decide(event: dict[str, Any]) -> dict[str, Any]:
        answered[event["event_id"]] += 1
        if event["event_id"] == "evt_b2000_2" and answered[event["event_id"]] == 1:
            return {"ok": False, "retry": True, "error": {"code": "BUSY", "message": "later"}}
        return {"ok": True, "duplicate": answered[event["event_id"]] > 1}

    receiver.script = batch_answers(decide)
    await store.outbox.enqueue(events(chats=2, per_chat=3))
    await delivery()
    await settled(store.outbox, lambda: answered["evt_b2000_3"] == 2)
    assert answered == Counter({"evt_b2000_1": 1, "evt_b2000_2": 2, "evt_b2000_3": 2,
                                "evt_b2001_1": 1, "evt_b2001_2": 1, "evt_b2001_3": 1})
    chat = [event["message_id"] for event in posted(receiver) if event["chat_id"] == "2000"]
    assert chat == [1, 2, 3, 2, 3]
    delivered = await store.outbox.list(PROJECT, OutboxState.DELIVERED)
    assert len(delivered) == 6 and not await store.outbox.list(PROJECT, OutboxState.DEAD)


async def test_a_5xx_retries_the_whole_batch_then_it_is_delivered(store, receiver, delivery) -> None:
    await register(store, receiver, max_events=20, max_wait_ms=100)
    answers = iter([(503, {}, {"code": "UNAVAILABLE"})])
    ok = batch_answers()
    receiver.script = lambda item: next(answers, None) or ok(item)
    await store.outbox.enqueue(events(chats=2, per_chat=3))
    await delivery()
    await settled(store.outbox, lambda: len(receiver.received) >= 2 and len(posted(receiver)) >= 6 + len(
        receiver.received[0].json["events"]))
    first = receiver.received[0].json["events"]
    counts = Counter(event["event_id"] for event in posted(receiver))
    assert all(counts[event["event_id"]] == 2 for event in first)
    assert len(await store.outbox.list(PROJECT, OutboxState.DELIVERED)) == 6
    assert not await store.outbox.list(PROJECT, OutboxState.DEAD)


async def test_a_4xx_to_the_batch_dead_letters_every_event_in_it(store, receiver, delivery) -> None:
    await register(store, receiver, max_events=20, max_wait_ms=100)
    receiver.script = lambda item: (400, {}, {"code": "BAD_BATCH", "error": "no"})
    await store.outbox.enqueue(events(chats=2, per_chat=3))
    await delivery()
    await settled(store.outbox, lambda: len(posted(receiver)) >= 6)
    dead = await store.outbox.list(PROJECT, OutboxState.DEAD)
    assert len(dead) == 6 and {row.last_error for row in dead} == {"HTTP 400 BAD_BATCH"}
    assert len(posted(receiver)) == 6  # none retried


def big_events(count: int, text_bytes: int) -> list[OutboxEvent]:
    made = events(chats=2, per_chat=count // 2)
    for event in made:
        event.payload["text"] = "ж" * (text_bytes // 2)  # two bytes each in UTF-8
    return made


async def test_a_batch_closes_before_its_body_passes_the_byte_budget(store, receiver, delivery) -> None:
    await register(store, receiver, max_events=100, max_wait_ms=100)
    receiver.script = batch_answers()
    await store.outbox.enqueue(big_events(20, text_bytes=3000))
    await delivery(DeliverySettings(concurrency=8, batch_max_bytes=10_000))
    await settled(store.outbox, lambda: len(posted(receiver)) >= 20)
    assert all(len(item.body) <= 10_000 for item in receiver.received)
    assert len(receiver.received) >= 20 * 3000 // 10_000  # split by size, not by max_events
    assert len(await store.outbox.list(PROJECT, OutboxState.DELIVERED, limit=100)) == 20


async def test_at_most_two_batches_of_a_registration_are_on_their_way_at_once(store, receiver, delivery) -> None:
    """A slow receiver is not sent a batch per max_wait_ms: due batches wait for an answer (and fill meanwhile)."""
    await register(store, receiver, max_events=4, max_wait_ms=10)
    receiver.script = batch_answers()
    receiver.delay = 0.3
    await store.outbox.enqueue(events(chats=12, per_chat=2))
    await delivery()
    await settled(store.outbox, lambda: len(posted(receiver)) >= 24)
    arrivals = sorted(item.at for item in receiver.received)
    # The third batch can leave only once the first was answered, 0.3 s after it arrived.
    assert all(later - first >= 0.29 for first, later in zip(arrivals, arrivals[2:]))
    assert len(await store.outbox.list(PROJECT, OutboxState.DELIVERED, limit=100)) == 24


async def test_a_413_to_a_batch_makes_smaller_batches_and_loses_nothing(store, receiver, delivery) -> None:
    """A receiver whose body limit is below crm_server's budget: never a dead letter for the batch's size."""
    await register(store, receiver, max_events=100, max_wait_ms=100)
    ok = batch_answers()
    receiver.script = lambda item: (413, {}, {"code": "PAYLOAD_TOO_LARGE"}) if len(item.body) > 8_000 else ok(item)
    await store.outbox.enqueue(big_events(20, text_bytes=3000))
    await delivery()
    await settled(store.outbox, lambda: len(receiver.accepted) >= 1 and sum(
        len(item.json["events"]) for item in receiver.accepted) >= 20)
    assert any(len(item.body) > 8_000 for item in receiver.received)  # the limit was met
    assert not await store.outbox.list(PROJECT, OutboxState.DEAD)
    assert len(await store.outbox.list(PROJECT, OutboxState.DELIVERED, limit=100)) == 20
    per_chat: dict[str, list[int]] = {}
    for item in receiver.accepted:
        for event in item.json["events"]:
            per_chat.setdefault(event["chat_id"], []).append(event["message_id"])
    assert all(numbers == sorted(numbers) for numbers in per_chat.values())


async def test_a_413_to_a_single_event_batch_is_that_events_dead_letter(store, receiver, delivery) -> None:
    await register(store, receiver, max_events=100, max_wait_ms=20)
    receiver.script = lambda item: (413, {}, {"code": "PAYLOAD_TOO_LARGE"})
    await store.outbox.enqueue(big_events(2, text_bytes=3000)[:1])
    await delivery()
    await settled(store.outbox, lambda: len(receiver.received) >= 1)
    dead = await store.outbox.list(PROJECT, OutboxState.DEAD)
    assert len(dead) == 1 and dead[0].last_error == "HTTP 413 PAYLOAD_TOO_LARGE"


async def test_an_answer_without_valid_results_or_missing_an_event_is_retried(store, receiver, delivery) -> None:
    await register(store, receiver, max_events=20, max_wait_ms=100)
    calls = Counter[str]()
    ok = batch_answers()

    def script(item: Received) -> tuple[int, dict[str, str], Any]:
        calls["posts"] += 1
        if calls["posts"] == 1:
            return 200, {}, {"success": True}  # no results at all: nothing is delivered by it
        if calls["posts"] == 2:
            events_ = item.json["events"]
            return 200, {}, {"results": [{"event_id": e["event_id"], "ok": True} for e in events_[:-1]]}
        return ok(item)

    receiver.script = script
    await store.outbox.enqueue(events(chats=1, per_chat=3))
    await delivery()
    await settled(store.outbox, lambda: calls["posts"] >= 3)
    chat = [event["message_id"] for event in posted(receiver)]
    assert chat == [1, 2, 3, 1, 2, 3, 3]
    assert len(await store.outbox.list(PROJECT, OutboxState.DELIVERED)) == 3


async def test_rows_held_in_a_batch_when_the_worker_stops_are_sent_again_by_the_next(store, receiver,
                                                                                     delivery) -> None:
    """At-least-once: a batch whose answer never came back is posted again, whole, by the worker after it."""
    await register(store, receiver, max_events=20, max_wait_ms=50)
    # The worker stops while the first batch waits for its answer.
    receiver.script, arrived, release = holding_the_first()
    await store.outbox.enqueue(events(chats=2, per_chat=2))
    first = await delivery()
    await until(arrived.is_set)
    await first.stop()
    release.set()
    assert len(await store.outbox.list(PROJECT, OutboxState.DELIVERED)) == 0
    await delivery()
    await settled(store.outbox, lambda: len(receiver.received) >= 2)
    assert len(await store.outbox.list(PROJECT, OutboxState.DELIVERED)) == 4
    # The held batch went at once (nothing was in flight), perhaps before the second chat's lane put its rows in:
    # each of its events is posted again, once; the others at least once.
    held = {event["event_id"] for event in receiver.received[0].json["events"]}
    counts = Counter(event["event_id"] for event in posted(receiver))
    assert held and all(counts[event_id] == 2 for event_id in held)
    assert set(counts) == {f"evt_b{2000 + chat}_{number}" for chat in range(2) for number in (1, 2)}


async def test_pausing_withdraws_the_batch_being_filled_and_resuming_delivers_it(store, receiver, delivery) -> None:
    """A batch fills while another of its registration is on its way; pausing then keeps it from going."""
    from crm_server.webhooks.registrations import WebhookRegistry

    await register(store, receiver, max_events=100, max_wait_ms=1000)
    # The first batch is on its way until the registration is paused.
    receiver.script, arrived, release = holding_the_first()
    await store.outbox.enqueue(events(chats=1, per_chat=1))
    worker = await delivery()
    registry = WebhookRegistry(store.webhooks, store.outbox, worker)
    await until(arrived.is_set)
    await store.outbox.enqueue([event for event in events(chats=3, per_chat=1) if event.chat_id != "2000"])
    worker.wake()
    await asyncio.sleep(0.3)  # their lanes have put the rows into the next batch, which waits behind the first
    assert await registry.pause(PROJECT, PHONE, True) >= 2
    release.set()
    await asyncio.sleep(1.2)  # past the first's answer and the batch's wait: it did not go
    assert [len(item.json["events"]) for item in receiver.received] == [1]
    assert (await store.outbox.health(PROJECT, PHONE)).pending == 2
    await registry.pause(PROJECT, PHONE, False)
    await settled(store.outbox, lambda: len(posted(receiver)) == 3)
    assert not await store.outbox.list(PROJECT, OutboxState.DEAD)


async def test_with_nothing_in_flight_a_batch_goes_at_once_not_after_max_wait(store, receiver, delivery) -> None:
    """Posting when idle: a receiver with no batch of ours to answer gets the events without the max_wait_ms wait."""
    await register(store, receiver, max_events=100, max_wait_ms=1000)
    receiver.script = batch_answers()
    await store.outbox.enqueue(events(chats=3, per_chat=1))
    started = time.time()
    await delivery()
    await settled(store.outbox, lambda: len(posted(receiver)) == 3)
    first = min(item.at for item in receiver.received)
    assert first - started < 0.5  # well before the batch's 1 s wait


async def test_a_batch_fills_behind_the_one_in_flight_and_goes_when_that_is_answered(store, receiver,
                                                                                    delivery) -> None:
    """While a batch is on its way the next one takes every chat's new rows, and leaves as soon as the first is
    answered (not max_wait_ms after its first row), so a busy receiver gets few, full batches."""
    await register(store, receiver, max_events=100, max_wait_ms=1000)
    receiver.script, arrived, release = holding_the_first()
    await store.outbox.enqueue(events(chats=1, per_chat=1))
    worker = await delivery()
    await until(arrived.is_set)
    await store.outbox.enqueue([event for event in events(chats=4, per_chat=1) if event.chat_id != "2000"])
    worker.wake()
    await asyncio.sleep(0.3)  # their lanes have put their rows into the next batch
    released = time.time()
    release.set()
    await settled(store.outbox, lambda: len(posted(receiver)) == 4)
    first, second = sorted(receiver.received, key=lambda item: item.at)
    assert [event["chat_id"] for event in first.json["events"]] == ["2000"]
    assert sorted(event["chat_id"] for event in second.json["events"]) == ["2001", "2002", "2003"]
    assert second.at - released < 0.5  # it did not wait out its 1 s
