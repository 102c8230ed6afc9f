"""Files a simulated user sends, as a real Telethon client sees them: each kind classified by Telethon's own helpers
exactly as for live Telegram, and downloaded by Telethon's real download_media (upload.getFile) byte for byte."""

from __future__ import annotations

import hashlib
import os

import pytest
from telethon import errors
from telethon.tl import functions, types

from crm_server.sandbox.media import SimIncomingMedia

from .client_steps import collect_incoming, log_in, wait_for

ACCOUNT = "+79993330001"
SENDER = "+79993330002"

# Which of Telethon's helpers answer for each kind on live Telegram (a round video and a GIF are videos too).
HELPERS = ("photo", "voice", "audio", "video", "video_note", "sticker", "gif")
EXPECTED_HELPERS = {
    "photo": {"photo"},
    "voice": {"voice"},
    "audio": {"audio"},
    "video": {"video"},
    "video_note": {"video", "video_note"},
    "document": set(),
    "sticker": {"sticker"},
    "animation": {"gif", "video"},
}
CASES = {
    "photo": (None, "image/jpeg"),
    "voice": (None, "audio/ogg"),
    "audio": ("song.mp3", "audio/mpeg"),
    "video": ("clip.mp4", "video/mp4"),
    "video_note": (None, "video/mp4"),
    "document": ("report.pdf", "application/pdf"),
    "sticker": ("sticker.webp", "image/webp"),
    "animation": ("funny.mp4", "video/mp4"),
}


@pytest.fixture
async def client(world, make_client):
    world.create_user(SENDER, username="mediasender", first_name="Media")
    logged_in = make_client()
    await log_in(logged_in, ACCOUNT)
    return logged_in


async def receive(world, client, media: SimIncomingMedia, text: str = ""):
    received = collect_incoming(client)
    world.incoming(ACCOUNT, "@mediasender", text, media=media)
    await wait_for(lambda: len(received) == 1)
    return received[0].message


@pytest.mark.parametrize("kind", list(CASES))
async def test_each_kind_is_classified_as_telegram_and_downloads_identical_bytes(world, client, kind):
    name, mime_type = CASES[kind]
    data = os.urandom(70_000) + kind.encode()

    message = await receive(world, client, SimIncomingMedia(kind=kind, data=data, file_name=name), text="caption")

    assert {helper for helper in HELPERS if getattr(message, helper)} == EXPECTED_HELPERS[kind]
    assert (message.document is None) == (kind == "photo")
    assert message.text == "caption"
    assert message.file.mime_type == mime_type
    assert message.file.size == len(data)
    assert message.file.name == name
    downloaded = await client.download_media(message, file=bytes)
    assert hashlib.sha256(downloaded).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_photo_lists_stripped_thumbnails_and_full_size_with_real_byte_counts(world, client):
    data = os.urandom(5000)

    message = await receive(world, client, SimIncomingMedia(kind="photo", data=data, width=2000, height=1500))

    sizes = message.photo.sizes
    assert isinstance(sizes[0], types.PhotoStrippedSize)
    assert [(s.type, s.w, s.h, s.size) for s in sizes[1:]] == [
        ("m", 320, 240, 5000), ("x", 800, 600, 5000), ("w", 2000, 1500, 5000)]
    thumb = await client.download_media(message, file=bytes, thumb="m")
    assert thumb == data


async def test_voice_and_audio_carry_duration_title_and_performer(world, client):
    voice = await receive(world, client, SimIncomingMedia(kind="voice", data=b"OggS voice", duration=7))
    song = await receive(world, client, SimIncomingMedia(kind="audio", data=b"ID3 song", file_name="a.mp3",
                                                         duration=180, title="Song", performer="Band"))

    assert voice.file.duration == 7 and voice.media.voice
    assert (song.file.duration, song.file.title, song.file.performer) == (180, "Song", "Band")


async def test_a_file_of_several_mib_downloads_in_several_parts(world, client):
    data = os.urandom(3 * 1024 * 1024 + 12345)
    before = world.request_counts["GetFileRequest"]

    message = await receive(world, client, SimIncomingMedia(kind="document", data=data, file_name="big.bin"))
    downloaded = await client.download_media(message, file=bytes)

    assert hashlib.sha256(downloaded).digest() == hashlib.sha256(data).digest()
    assert world.request_counts["GetFileRequest"] - before > 1


async def test_media_message_reaches_a_client_that_was_offline(world, make_client):
    world.create_user(SENDER, username="mediasender")
    world.create_account(ACCOUNT)
    world.incoming(ACCOUNT, SENDER, "", media=SimIncomingMedia(kind="document", data=b"waiting", file_name="w.txt"))
    client = make_client()
    await log_in(client, ACCOUNT)

    [dialog] = await client.get_dialogs()
    message = dialog.message

    assert message.file.name == "w.txt"
    assert await client.download_media(message, file=bytes) == b"waiting"


def _location(message: types.Message, **changes) -> types.InputDocumentFileLocation:
    document = message.document
    fields = {"id": document.id, "access_hash": document.access_hash, "file_reference": document.file_reference,
              "thumb_size": ""}
    fields.update(changes)
    return types.InputDocumentFileLocation(**fields)


@pytest.fixture
async def document_message(world, client):
    data = bytes(range(256)) * 8192  # 2 MiB
    return await receive(world, client, SimIncomingMedia(kind="document", data=data, file_name="x.bin")), data


@pytest.mark.parametrize(("offset", "limit", "error"), [
    (0, 1000, errors.LimitInvalidError),  # not a multiple of 4 KiB
    (0, 3 * 4096, errors.LimitInvalidError),  # does not divide 1 MiB
    (0, 2 * 1024 * 1024, errors.LimitInvalidError),  # over 1 MiB
    (0, 0, errors.LimitInvalidError),
    (1000, 4096, errors.OffsetInvalidError),  # not a multiple of 4 KiB
    (-4096, 4096, errors.OffsetInvalidError),
    (4096, 1024 * 1024, errors.LimitInvalidError),  # would cross a 1 MiB boundary
])
async def test_get_file_refuses_ranges_as_telegram(client, document_message, offset, limit, error):
    message, _ = document_message

    with pytest.raises(error):
        await client(functions.upload.GetFileRequest(_location(message), offset=offset, limit=limit))


async def test_get_file_serves_aligned_ranges_and_nothing_past_the_end(client, document_message):
    message, data = document_message

    middle = await client(functions.upload.GetFileRequest(_location(message), offset=1024 * 1024, limit=65536))
    precise = await client(functions.upload.GetFileRequest(_location(message), offset=1024, limit=3072, precise=True))
    past = await client(functions.upload.GetFileRequest(_location(message), offset=4 * 1024 * 1024, limit=4096))

    assert middle.bytes == data[1024 * 1024:1024 * 1024 + 65536]
    assert precise.bytes == data[1024:4096]
    assert past.bytes == b""


@pytest.mark.parametrize(("changes", "error"), [
    ({"file_reference": b"\x00" * 16}, errors.FileReferenceExpiredError),
    ({"access_hash": 12345}, errors.LocationInvalidError),
    ({"id": 424242}, errors.LocationInvalidError),
    ({"thumb_size": "m"}, errors.LocationInvalidError),  # documents have no thumbnails here
])
async def test_get_file_refuses_a_wrong_location(client, document_message, changes, error):
    message, _ = document_message

    with pytest.raises(error):
        await client(functions.upload.GetFileRequest(_location(message, **changes), offset=0, limit=4096))


async def test_an_unavailable_file_is_listed_but_refuses_downloads(world, client):
    message = await receive(world, client, SimIncomingMedia(kind="video", data=b"gone", unavailable=True))

    assert message.video is not None and message.file.size == 4
    with pytest.raises(errors.FileIdInvalidError):
        await client.download_media(message, file=bytes)


@pytest.mark.parametrize(("media", "problem"), [
    (SimIncomingMedia(kind="hologram", data=b"x"), "kind"),
    (SimIncomingMedia(kind="photo", data=b""), "empty"),
])
def test_world_refuses_bad_incoming_media(world, media, problem):
    world.create_user(SENDER)
    world.create_account(ACCOUNT)

    with pytest.raises(Exception, match=problem):
        world.incoming(ACCOUNT, SENDER, "", media=media)


def test_world_refuses_a_file_over_its_cap(world, monkeypatch):
    world.create_user(SENDER)
    world.create_account(ACCOUNT)
    monkeypatch.setattr("crm_server.sandbox.world.MAX_INCOMING_FILE_BYTES", 4)

    with pytest.raises(Exception, match="at most 4 bytes"):
        world.incoming(ACCOUNT, SENDER, "", media=SimIncomingMedia(kind="document", data=b"12345"))


def test_text_may_be_empty_only_with_media(world):
    world.create_user(SENDER)
    world.create_account(ACCOUNT)

    with pytest.raises(Exception, match="text"):
        world.incoming(ACCOUNT, SENDER, "")
    assert world.incoming(ACCOUNT, SENDER, "", media=SimIncomingMedia(kind="sticker", data=b"RIFF")) > 0


def test_stored_media_survive_a_reopened_world_file(tmp_path):
    from crm_server.sandbox import SandboxWorld

    path = tmp_path / "world.sqlite3"
    with SandboxWorld(path) as world:
        world.create_user(SENDER)
        world.create_account(ACCOUNT)
        world.incoming(ACCOUNT, SENDER, "", media=SimIncomingMedia(kind="voice", data=b"OggS kept"))
    with SandboxWorld(path) as reopened:
        [message] = reopened.history(reopened.user_id_of(ACCOUNT), reopened.user_id_of(SENDER), 0, 10)
        stored = reopened.file(message.media.file_id)
        assert (stored.kind, stored.size) == ("voice", 9)
        assert reopened.files.read(stored.id, 0, 4096) == b"OggS kept"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
