"""The delivery worker with media: a lane gets its event's file (once) right before the post, a body with a fresh
signed URL; over the limit or refused files are delivered without one; a file not to be had yet holds up only its
own chat, in order, and never makes a dead letter.

The MediaSource here hands out bytes of the test's choosing (the Telegram side is tested end to end in
tests/crm_server/test_incoming_media.py); the worker, store, files, links and receiver are the real ones.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from crm_server.media.files import CountingFile, MediaFiles
from crm_server.media.links import MediaLinks, link_key
from crm_server.store.database import Store
from crm_server.store.outbox import OutboxEvent
from crm_server.store.webhooks import BatchSettings
from crm_server.webhooks.media_payload import MediaHint, MediaPreparer
from crm_server.webhooks.media_source import MediaRef, MediaTransient, MediaUnavailable
from crm_server.webhooks.policy import RetrySchedule
from crm_server.webhooks.worker import DeliverySettings, WebhookDelivery
from tests.helpers.receiver import batch_answers
from tests.helpers.waiting import until

PROJECT = "org-media-delivery"
PHONE = "+79990005566"
SECRET = "s3cret-for-media"
FAST = RetrySchedule(first_delay=0.1, max_delay=0.3, window=0.5)  # a short window: media waits must ignore it
LIMIT = 1000


class ScriptedSource:
    """Files by message id; `refused` raise MediaUnavailable, `not_yet` MediaTransient, `gates` wait for a go."""

    def __init__(self, files: dict[int, bytes]) -> None:
        self.files = files
        self.refused: set[int] = set()
        self.not_yet: set[int] = set()
        self.gates: dict[int, asyncio.Event] = {}
        self.downloads: list[int] = []

    async def download(self, ref: MediaRef, into: CountingFile) -> None:
        self.downloads.append(ref.message_id)
        if ref.message_id in self.gates:
            await self.gates[ref.message_id].wait()
        if ref.message_id in self.refused:
            raise MediaUnavailable("refused")
        if ref.message_id in self.not_yet:
            raise MediaTransient("not connected")
        data = self.files[ref.message_id]
        for start in range(0, len(data), 7):  # streamed in pieces, as Telethon writes its parts
            into.write(data[start:start + 7])


def event(chat: str, message_id: int, hint: MediaHint | None) -> OutboxEvent:
    payload: dict = {"event_id": f"evt_{chat}_{message_id}", "chat_id": int(chat), "message_id": message_id,
                     "text": "" if hint else f"text {message_id}"}
    if hint is not None:
        payload.update(media=hint.wire(), file_url=None, file_type=hint.kind, file_name=hint.file_name)
    return OutboxEvent(event_id=f"evt_{chat}_{message_id}", project_id=PROJECT, phone=PHONE, chat_id=chat,
                       message_id=message_id, payload=payload)


def photo(size: int | None) -> MediaHint:
    return MediaHint(kind="photo", mime_type="image/jpeg", file_name="photo.jpg", size=size)


@pytest.fixture
async def setup(store: Store, tmp_path: Path, receiver):
    receiver.reset()
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET)
    source = ScriptedSource({})
    links = MediaLinks(link_key(b"k"), "http://127.0.0.1:9", 3600)
    files = MediaFiles(tmp_path / "media", store.media, max_disk_bytes=1 << 20, retention_seconds=3600)
    preparer = MediaPreparer(source, store.media, files, links, max_bytes=LIMIT)
    http = httpx.AsyncClient(timeout=5.0)
    worker = WebhookDelivery(store.outbox, store.webhooks, http, FAST, DeliverySettings(concurrency=4),
                             media=preparer)
    yield source, links, worker, receiver
    await worker.stop()
    await http.aclose()


def link_parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path.rsplit("/", 1)[1], query["expires"][0], query["signature"][0]


async def test_a_photo_without_caption_arrives_with_its_checksum_and_a_signed_url(store, setup) -> None:
    source, links, worker, receiver = setup
    data = b"\xff\xd8 a jpeg of sorts " * 10
    source.files[1] = data
    await store.outbox.enqueue([event("11", 1, photo(len(data)))])
    await worker.start()
    await until(lambda: len(receiver.accepted) >= 1)
    body = receiver.accepted[0].json
    media = body["media"]
    assert body["text"] == ""
    assert (media["kind"], media["mime_type"], media["file_name"]) == ("photo", "image/jpeg", "photo.jpg")
    assert media["size"] == len(data) and media["sha256"] == hashlib.sha256(data).hexdigest()
    assert "error" not in media and media["expires_at"].endswith("Z")
    assert links.valid(*link_parts(media["url"]))
    assert (body["file_url"], body["file_type"], body["file_name"]) == (media["url"], "photo", "photo.jpg")
    record = await store.media.get("evt_11_1")
    assert record is not None and Path(record.path).read_bytes() == data


async def test_an_announced_oversize_file_is_delivered_without_url_and_never_downloaded(store, setup) -> None:
    source, _, worker, receiver = setup
    await store.outbox.enqueue([event("12", 1, photo(LIMIT + 1))])
    await worker.start()
    await until(lambda: len(receiver.accepted) >= 1)
    media = receiver.accepted[0].json["media"]
    assert (media["url"], media["error"], media["size"]) == (None, "too_large", LIMIT + 1)
    assert receiver.accepted[0].json["file_url"] is None
    assert source.downloads == []


async def test_a_file_bigger_than_announced_stops_at_the_limit(store, setup, tmp_path) -> None:
    source, _, worker, receiver = setup
    source.files[1] = b"x" * (LIMIT + 50)
    await store.outbox.enqueue([event("13", 1, photo(10))])
    await worker.start()
    await until(lambda: len(receiver.accepted) >= 1)
    assert receiver.accepted[0].json["media"]["error"] == "too_large"
    record = await store.media.get("evt_13_1")
    assert record is not None and record.path is None
    assert list(tmp_path.glob("media/*")) == []  # the partial download is gone


async def test_a_file_telegram_refuses_is_delivered_as_unavailable(store, setup) -> None:
    source, _, worker, receiver = setup
    source.refused.add(1)
    await store.outbox.enqueue([event("14", 1, photo(10))])
    await worker.start()
    await until(lambda: len(receiver.accepted) >= 1)
    media = receiver.accepted[0].json["media"]
    assert (media["url"], media["error"]) == (None, "unavailable")


async def test_a_retried_delivery_downloads_once_and_gets_a_fresh_url(store, setup) -> None:
    source, _, worker, receiver = setup
    source.files[1] = b"voice bytes"
    answers = iter([500, 200])
    receiver.script = lambda _: (next(answers, 200), {})
    await store.outbox.enqueue([event("15", 1, MediaHint("voice", "audio/ogg", "voice.ogg", 11))])
    await worker.start()
    await until(lambda: len(receiver.accepted) >= 1)
    assert len(receiver.received) == 2
    assert source.downloads == [1]
    first, second = (item.json["media"] for item in receiver.received)
    assert first["sha256"] == second["sha256"] and first["url"].split("?")[0] == second["url"].split("?")[0]


async def test_a_file_not_to_be_had_yet_waits_in_its_chat_without_becoming_a_dead_letter(store, setup) -> None:
    source, _, worker, receiver = setup
    source.files[1] = b"later"
    source.not_yet.add(1)
    await store.outbox.enqueue([event("16", 1, photo(5)), event("16", 2, None), event("17", 1, None)])
    await worker.start()
    await until(lambda: len(receiver.accepted) >= 1)  # the other chat is not held up
    assert [item.json["chat_id"] for item in receiver.accepted] == [17]
    await until(lambda: len(source.downloads) >= 3)  # retried past the (short) retry window
    assert (await store.outbox.health(PROJECT, PHONE)).dead == 0
    source.not_yet.clear()
    await until(lambda: len(receiver.accepted) >= 3)
    chat = [item.json["message_id"] for item in receiver.accepted if item.json["chat_id"] == 16]
    assert chat == [1, 2]  # its text after its photo


async def test_a_big_file_holds_its_chat_in_order_while_other_chats_flow(store, setup) -> None:
    source, _, worker, receiver = setup
    source.files[1] = b"a big photo"
    source.gates[1] = asyncio.Event()
    await store.outbox.enqueue([event("18", 1, photo(11)), event("18", 2, None),
                                event("19", 1, None), event("19", 2, None)])
    await worker.start()
    await until(lambda: len(receiver.accepted) >= 2)
    assert {item.json["chat_id"] for item in receiver.accepted} == {19}
    source.gates[1].set()
    await until(lambda: len(receiver.accepted) >= 4)
    order = [(item.json["chat_id"], item.json["message_id"]) for item in receiver.accepted]
    assert order.index((18, 1)) < order.index((18, 2))


async def test_in_batches_a_file_not_to_be_had_yet_holds_its_chat_from_it_on_and_others_go(store, setup) -> None:
    source, links, worker, receiver = setup
    await store.webhooks.upsert(PROJECT, PHONE, receiver.url, SECRET, batch=BatchSettings(20, 50))
    receiver.script = batch_answers()
    source.files[2] = b"later photo"
    source.not_yet.add(2)
    await store.outbox.enqueue([event("20", 1, None), event("20", 2, photo(11)), event("20", 3, None),
                                event("21", 1, None)])
    await worker.start()

    def arrived() -> list[tuple[int, int]]:
        return [(e["chat_id"], e["message_id"]) for item in list(receiver.accepted) for e in item.json["events"]]

    await until(lambda: {(20, 1), (21, 1)} <= set(arrived()))  # the rows before it, and the other chat, go
    await until(lambda: len(source.downloads) >= 2)
    assert (20, 2) not in arrived() and (20, 3) not in arrived()
    assert (await store.outbox.health(PROJECT, PHONE)).dead == 0
    source.not_yet.clear()
    await until(lambda: (20, 3) in arrived())
    chat = [message for chat_id, message in arrived() if chat_id == 20]
    assert chat == [1, 2, 3]
    media = next(e for item in receiver.accepted for e in item.json["events"] if e["message_id"] == 2)["media"]
    assert media["size"] == 11 and links.valid(*link_parts(media["url"]))
