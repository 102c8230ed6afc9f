"""media_hint: Telethon's own classification of a Message's media → the contract's kind, name, type and size."""

from __future__ import annotations

import datetime

from telethon.tl import custom, types

from crm_server.telegram.updates import media_hint


def message(media: object) -> custom.Message:
    return custom.Message(id=42, peer_id=types.PeerUser(7), date=datetime.datetime.now(datetime.timezone.utc),
                          message="", media=media)


def document(mime: str, *attributes: object, size: int = 1234) -> types.MessageMediaDocument:
    return types.MessageMediaDocument(document=types.Document(
        id=1, access_hash=2, file_reference=b"r", date=None, mime_type=mime, size=size, dc_id=2,
        attributes=list(attributes)))


def photo() -> types.MessageMediaPhoto:
    return types.MessageMediaPhoto(photo=types.Photo(
        id=1, access_hash=2, file_reference=b"r", date=None, dc_id=2,
        sizes=[types.PhotoSize(type="x", w=800, h=600, size=5555)]))


def test_each_kind_follows_telethons_classification() -> None:
    video = types.DocumentAttributeVideo(duration=1, w=1, h=1)
    cases = {
        "photo": photo(),
        "voice": document("audio/ogg", types.DocumentAttributeAudio(duration=1, voice=True)),
        "audio": document("audio/mpeg", types.DocumentAttributeAudio(duration=1),
                          types.DocumentAttributeFilename("a.mp3")),
        "video_note": document("video/mp4", types.DocumentAttributeVideo(duration=1, w=1, h=1, round_message=True)),
        "animation": document("video/mp4", video, types.DocumentAttributeAnimated()),
        "video": document("video/mp4", video, types.DocumentAttributeFilename("clip.mp4")),
        "sticker": document("image/webp", types.DocumentAttributeSticker(alt="x", stickerset=types.InputStickerSetEmpty())),
        "document": document("application/pdf", types.DocumentAttributeFilename("report.pdf")),
    }
    for kind, media in cases.items():
        hint = media_hint(message(media))
        assert hint is not None and hint.kind == kind, (kind, hint)


def test_a_document_keeps_its_name_type_and_size_and_a_photo_gets_a_name() -> None:
    hint = media_hint(message(document("application/pdf", types.DocumentAttributeFilename("report.pdf"), size=99)))
    assert (hint.file_name, hint.mime_type, hint.size) == ("report.pdf", "application/pdf", 99)
    hint = media_hint(message(photo()))
    assert (hint.file_name, hint.mime_type, hint.size) == ("photo_42.jpg", "image/jpeg", 5555)


def test_a_link_preview_or_a_location_is_no_file() -> None:
    preview = types.MessageMediaWebPage(webpage=types.WebPage(
        id=1, url="https://e.com", display_url="e.com", hash=0, photo=photo().photo))
    assert media_hint(message(preview)) is None
    assert media_hint(message(types.MessageMediaGeo(geo=types.GeoPoint(long=1.0, lat=2.0, access_hash=3)))) is None
    assert media_hint(message(None)) is None
