"""Files an account sends through Telethon's real upload (upload.saveFilePart / saveBigFilePart, messages.sendMedia):
recorded with identical bytes, the kind Telegram shows and the name; parts checked as Telegram checks them."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from telethon import errors
from telethon.tl import functions, types

from crm_server.sandbox.media import SimIncomingMedia

from .client_steps import collect_incoming, log_in, wait_for

ACCOUNT = "+79995550001"
PEER_ACCOUNT = "+79995550002"


@pytest.fixture
async def client(world, make_client):
    world.create_user(PEER_ACCOUNT, username="mediapeer", first_name="Peer")
    logged_in = make_client()
    await log_in(logged_in, ACCOUNT)
    return logged_in


def named(data: bytes, name: str) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name  # Telethon reads the file name (and so the kind it guesses) from here
    return stream


STICKER = [types.DocumentAttributeSticker(alt="", stickerset=types.InputStickerSetEmpty()),
           types.DocumentAttributeImageSize(w=512, h=512)]
CASES = [
    ("photo", "pic.jpg", {}, None),
    ("voice", "note.ogg", {"voice_note": True}, "note.ogg"),
    ("audio", "song.mp3", {"attributes": [types.DocumentAttributeAudio(duration=61, title="T", performer="P")]},
     "song.mp3"),
    ("video", "clip.mp4", {}, "clip.mp4"),
    ("video_note", "round.mp4", {"video_note": True}, "round.mp4"),
    ("document", "report.pdf", {}, "report.pdf"),
    ("document", "clip.mp4", {"force_document": True}, "clip.mp4"),
    ("sticker", "sticker.webp", {"force_document": True, "attributes": STICKER}, "sticker.webp"),
    ("animation", "funny.mp4", {"attributes": [types.DocumentAttributeAnimated()]}, "funny.mp4"),
]


@pytest.mark.parametrize(("kind", "name", "options", "shown_name"), CASES)
async def test_each_sent_kind_is_recorded_with_identical_bytes(world, client, kind, name, options, shown_name):
    data = os.urandom(300_000)

    message = await client.send_file("@mediapeer", named(data, name), caption="see this", **options)

    [entry] = world.sent(ACCOUNT)
    assert entry["text"] == "see this" and entry["message_id"] == message.id
    assert entry["media"] == {"kind": kind, "file_name": name, "size": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()}
    assert message.file.size == len(data)
    if kind != "photo":
        assert message.file.name == shown_name
    # What the sender's own client gets back downloads as the same bytes.
    assert await client.download_media(message, file=bytes) == data


async def test_a_file_over_10_mib_is_uploaded_in_big_parts(world, client):
    data = os.urandom(10 * 1024 * 1024 + 4097)

    await client.send_file("@mediapeer", named(data, "big.bin"))

    assert world.request_counts["SaveBigFilePartRequest"] > 1
    assert world.sent(ACCOUNT)[0]["media"]["sha256"] == hashlib.sha256(data).hexdigest()


async def test_a_file_sent_to_another_account_arrives_there(world, client, make_client):
    peer = make_client()
    await log_in(peer, PEER_ACCOUNT)
    received = collect_incoming(peer)
    data = os.urandom(50_000)

    await client.send_file("@mediapeer", named(data, "n.ogg"), voice_note=True)
    await wait_for(lambda: len(received) == 1)

    message = received[0].message
    assert message.voice is not None
    assert await peer.download_media(message, file=bytes) == data


async def test_a_received_file_forwarded_by_url_still_works_as_before(world, client):
    await client.send_file("@mediapeer", "https://example.com/a/b.png")

    assert world.sent(ACCOUNT, with_media=True)[0]["media"] == {
        "kind": "photo", "url": "https://example.com/a/b.png", "name": None}


# ---------------------------------------------------------------- Telegram's part rules, asked directly


async def send_uploaded(client, input_file) -> object:
    peer = await client.get_input_entity("@mediapeer")
    media = types.InputMediaUploadedDocument(file=input_file, mime_type="application/octet-stream",
                                             attributes=[types.DocumentAttributeFilename("x.bin")])
    return await client(functions.messages.SendMediaRequest(peer=peer, media=media, message=""))


async def test_a_part_over_512_kib_is_refused(client):
    with pytest.raises(errors.FilePartSizeInvalidError):
        await client(functions.upload.SaveFilePartRequest(1, 0, b"x" * (512 * 1024 + 1024)))


async def test_a_part_index_out_of_range_is_refused(client):
    with pytest.raises(errors.FilePartInvalidError):
        await client(functions.upload.SaveFilePartRequest(1, 4000, b"x" * 1024))
    with pytest.raises(errors.FilePartInvalidError):
        await client(functions.upload.SaveBigFilePartRequest(2, 3, 3, b"x" * 1024))


async def test_parts_whose_size_does_not_tile_512_kib_are_refused_at_send(world, client):
    for index in range(2):
        await client(functions.upload.SaveFilePartRequest(7, index, b"y" * 3000))

    with pytest.raises(errors.FilePartSizeInvalidError):
        await send_uploaded(client, types.InputFile(7, 2, "x.bin", ""))
    assert world.sent(ACCOUNT) == []


async def test_a_missing_part_is_named(client):
    await client(functions.upload.SaveFilePartRequest(8, 0, b"z" * 1024))
    await client(functions.upload.SaveFilePartRequest(8, 2, b"z" * 10))

    with pytest.raises(errors.FilePartMissingError) as raised:
        await send_uploaded(client, types.InputFile(8, 3, "x.bin", ""))
    assert raised.value.which == 1


async def test_a_wrong_md5_is_refused(client):
    await client(functions.upload.SaveFilePartRequest(9, 0, b"content"))

    with pytest.raises(errors.Md5ChecksumInvalidError):
        await send_uploaded(client, types.InputFile(9, 1, "x.bin", hashlib.md5(b"other").hexdigest()))


async def test_big_parts_must_agree_on_the_total(client):
    await client(functions.upload.SaveBigFilePartRequest(10, 0, 3, b"b" * 1024))

    with pytest.raises(errors.FilePartsInvalidError):
        await client(functions.upload.SaveBigFilePartRequest(10, 1, 4, b"b" * 1024))


async def test_parts_uploaded_on_another_session_are_not_this_sessions(world, client, make_client):
    other = make_client()
    await log_in(other, ACCOUNT)
    await other(functions.upload.SaveFilePartRequest(11, 0, b"theirs"))

    with pytest.raises(errors.FilePart0MissingError):
        await send_uploaded(client, types.InputFile(11, 1, "x.bin", ""))


async def test_an_upload_is_used_once(world, client):
    await client(functions.upload.SaveFilePartRequest(12, 0, b"once"))
    await send_uploaded(client, types.InputFile(12, 1, "x.bin", hashlib.md5(b"once").hexdigest()))

    with pytest.raises(errors.FilePart0MissingError):
        await send_uploaded(client, types.InputFile(12, 1, "x.bin", ""))
    assert [entry["media"]["size"] for entry in world.sent(ACCOUNT)] == [4]


async def test_a_refused_send_keeps_no_file(world, client):
    world.create_user("+79995550009", username="shymedia", privacy_restricted=True)

    with pytest.raises(errors.UserPrivacyRestrictedError):
        await client.send_file("@shymedia", named(b"data", "x.txt"))
    assert world.sent(ACCOUNT) == []


def test_incoming_and_sent_media_are_separate_logs(world):
    world.create_user(PEER_ACCOUNT)
    world.create_account(ACCOUNT)
    world.incoming(ACCOUNT, PEER_ACCOUNT, "", media=SimIncomingMedia(kind="photo", data=b"jpeg"))

    assert world.sent(ACCOUNT) == []
