"""TelegramMediaSource on a real TelegramClient over the sandbox: Telethon's own download_media streams the file
into the counting file, a stale file reference makes it fetch the message again, and refusals map to the lane's
next step (wait, or deliver without the file)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from telethon import TelegramClient

from crm_server.media.files import CountingFile, FileTooLarge
from crm_server.sandbox.media import SimIncomingMedia
from crm_server.telegram.media_download import TelegramMediaSource
from crm_server.telegram.states import AccountKey, SessionTerminated
from crm_server.telegram.updates import RecentMessages
from crm_server.webhooks.media_source import MediaRef, MediaTransient, MediaUnavailable
from tests.crm_server.sandbox.client_steps import collect_incoming, log_in, wait_for
from tests.crm_server.sandbox.conftest import make_client  # noqa: F401

ACCOUNT = "+79994440001"
SENDER = "+79994440002"
KEY = AccountKey("org", ACCOUNT)


async def receive(world, client: TelegramClient, media: SimIncomingMedia):  # noqa: F811
    received = collect_incoming(client)
    world.incoming(ACCOUNT, "@filesender", "", media=media)
    await wait_for(lambda: len(received) == 1)
    return received[0]


@pytest.fixture
async def client(world, make_client):  # noqa: F811
    world.create_user(SENDER, username="filesender")
    logged_in = make_client()
    await log_in(logged_in, ACCOUNT)
    return logged_in


def source_for(client: TelegramClient | None, recent: RecentMessages) -> TelegramMediaSource:
    source = TelegramMediaSource(recent)
    source.serve_from(lambda project_id, phone: client)
    return source


def ref(event) -> MediaRef:
    return MediaRef(event_id="evt", project_id="org", phone=ACCOUNT, chat_id=event.chat_id,
                    message_id=event.message.id)


async def test_the_kept_message_is_downloaded_byte_for_byte(world, client, tmp_path: Path) -> None:
    data = bytes(range(256)) * 900  # more than one 128 KB part
    event = await receive(world, client, SimIncomingMedia("document", data, file_name="r.bin"))
    recent = RecentMessages()
    recent.remember(KEY, event.chat_id, event.message)
    into = CountingFile(tmp_path / "f", limit=1 << 20)
    await source_for(client, recent).download(ref(event), into)
    into.close()
    assert (tmp_path / "f").read_bytes() == data and into.sha256 == hashlib.sha256(data).hexdigest()
    assert recent.get(KEY, event.chat_id, event.message.id) is None  # done with it


async def test_a_stale_file_reference_fetches_the_message_again(world, client, tmp_path: Path) -> None:
    data = b"photo bytes" * 100
    event = await receive(world, client, SimIncomingMedia("photo", data))
    event.message.media.photo.file_reference = b"stale-reference"
    recent = RecentMessages()
    recent.remember(KEY, event.chat_id, event.message)
    into = CountingFile(tmp_path / "f", limit=1 << 20)
    await source_for(client, recent).download(ref(event), into)
    into.close()
    assert (tmp_path / "f").read_bytes() == data


async def test_without_the_kept_message_it_is_fetched_and_limits_hold(world, client, tmp_path: Path) -> None:
    event = await receive(world, client, SimIncomingMedia("video", b"v" * 5000, file_name="v.mp4"))
    into = CountingFile(tmp_path / "f", limit=1000)
    with pytest.raises(FileTooLarge):
        await source_for(client, RecentMessages()).download(ref(event), into)
    into.close()


async def test_refusals_map_to_unavailable_and_no_client_to_waiting(world, client, tmp_path: Path) -> None:
    event = await receive(world, client, SimIncomingMedia("document", b"x", file_name="x", unavailable=True))
    with pytest.raises(MediaUnavailable):
        await source_for(client, RecentMessages()).download(ref(event), CountingFile(tmp_path / "a", 100))
    with pytest.raises(MediaTransient):
        await source_for(None, RecentMessages()).download(ref(event), CountingFile(tmp_path / "b", 100))
    # (A message deleted before its download is not tried here: the sandbox's messages.getMessages fails on an id
    # it does not have instead of answering messageEmpty.)

    def logged_out(project_id: str, phone: str) -> TelegramClient:
        raise SessionTerminated(phone)

    source = TelegramMediaSource(RecentMessages())
    source.serve_from(logged_out)
    with pytest.raises(MediaUnavailable):
        await source.download(ref(event), CountingFile(tmp_path / "d", 100))
