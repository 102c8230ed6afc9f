"""What a file in the simulated Telegram is (`SimFile`: kind, mime type, name, size, the attributes Telegram shows)
and how Telegram presents an uploaded document's attributes as one of the contract's kinds. No storage, no TL wire."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass

from telethon.tl import types

# The contract's media kinds, in the words Telethon's helpers use (message.photo, .voice, .video_note, .gif...).
KINDS = ("photo", "voice", "audio", "video", "video_note", "document", "sticker", "animation")

# What Telegram stores when the sender says nothing more specific: voice notes are Opus in Ogg, stickers WebP,
# animations ("GIFs") MP4 and photos are re-encoded as JPEG.
_DEFAULT_MIME = {
    "photo": "image/jpeg",
    "voice": "audio/ogg",
    "audio": "audio/mpeg",
    "video": "video/mp4",
    "video_note": "video/mp4",
    "sticker": "image/webp",
    "animation": "video/mp4",
}
# Dimensions shown when the caller gives none (the sandbox does not decode media): typical of each kind.
_DEFAULT_SIZE = {"photo": (1280, 960), "video": (1280, 720), "video_note": (384, 384), "sticker": (512, 512),
                 "animation": (480, 270)}


@dataclass(frozen=True, slots=True)
class SimFile:
    """One stored file: a photo (kind "photo") or a document of any other kind. `id` is Telegram's photo/document
    id; `unavailable` files are listed in messages but Telegram refuses to serve their bytes."""

    id: int
    kind: str
    mime_type: str
    name: str | None
    size: int
    sha256: str
    date: int
    duration: int | None = None
    width: int | None = None
    height: int | None = None
    title: str | None = None
    performer: str | None = None
    unavailable: bool = False

    @property
    def dimensions(self) -> tuple[int, int]:
        default = _DEFAULT_SIZE.get(self.kind, (1, 1))
        return (self.width or default[0], self.height or default[1])


@dataclass(frozen=True, slots=True)
class SimIncomingMedia:
    """A file a simulated user sends to an account (`world.incoming(..., media=...)`); the optional fields are what
    Telegram would read from the file itself (the sandbox does not decode media)."""

    kind: str
    data: bytes
    file_name: str | None = None
    mime_type: str | None = None
    duration: int | None = None
    width: int | None = None
    height: int | None = None
    title: str | None = None
    performer: str | None = None
    unavailable: bool = False


def default_mime_type(kind: str, name: str | None) -> str:
    if kind in ("photo", "voice", "sticker", "animation"):
        return _DEFAULT_MIME[kind]
    guessed = mimetypes.guess_type(name)[0] if name else None
    return guessed or _DEFAULT_MIME.get(kind, "application/octet-stream")


@dataclass(frozen=True, slots=True)
class UploadedDescription:
    """What an InputMediaUploaded* says about its file, read the way Telegram reads it."""

    kind: str
    mime_type: str
    name: str | None
    duration: int | None = None
    width: int | None = None
    height: int | None = None
    title: str | None = None
    performer: str | None = None

    def template(self, date: int) -> SimFile:
        """The file's metadata before its bytes are joined (id, size and sha256 are set by FileStore.assemble)."""
        return SimFile(id=0, kind=self.kind, mime_type=self.mime_type, name=self.name, size=0, sha256="", date=date,
                       duration=self.duration, width=self.width, height=self.height, title=self.title,
                       performer=self.performer)


def describe_uploaded_document(mime_type: str, attributes: Sequence[object], upload_name: str | None
                               ) -> UploadedDescription:
    """The kind Telegram shows for an uploaded document: its attributes decide, as in Telegram's own clients
    (sticker, then animation, then round video, video, voice, audio); a file with none of them is a document."""
    by_type = {type(attribute): attribute for attribute in attributes}
    filename = by_type.get(types.DocumentAttributeFilename)
    video = by_type.get(types.DocumentAttributeVideo)
    audio = by_type.get(types.DocumentAttributeAudio)
    image = by_type.get(types.DocumentAttributeImageSize)
    name = filename.file_name if filename is not None else upload_name
    if types.DocumentAttributeSticker in by_type:
        kind = "sticker"
    elif types.DocumentAttributeAnimated in by_type:
        kind = "animation"
    elif video is not None:
        kind = "video_note" if video.round_message else "video"
    elif audio is not None:
        kind = "voice" if audio.voice else "audio"
    else:
        kind = "document"
    width = video.w if video is not None else image.w if image is not None else None
    height = video.h if video is not None else image.h if image is not None else None
    duration = video.duration if video is not None else audio.duration if audio is not None else None
    return UploadedDescription(
        kind=kind,
        mime_type=mime_type or default_mime_type(kind, name),
        name=name,
        duration=int(duration) if duration is not None else None,
        width=width,
        height=height,
        title=audio.title if audio is not None else None,
        performer=audio.performer if audio is not None else None,
    )


def document_attributes(sim: SimFile) -> list[types.TypeDocumentAttribute]:
    """The attributes Telegram sends with a document of `sim.kind`, so Telethon classifies it as it would live."""
    width, height = sim.dimensions
    duration = sim.duration if sim.duration is not None else 1
    attributes: list[types.TypeDocumentAttribute] = []
    if sim.kind == "voice":
        attributes.append(types.DocumentAttributeAudio(duration=duration, voice=True))
    elif sim.kind == "audio":
        attributes.append(types.DocumentAttributeAudio(duration=duration, title=sim.title, performer=sim.performer))
    elif sim.kind in ("video", "video_note"):
        attributes.append(types.DocumentAttributeVideo(
            duration=duration, w=width, h=height, round_message=(sim.kind == "video_note") or None,
            supports_streaming=True))
    elif sim.kind == "sticker":
        attributes.append(types.DocumentAttributeImageSize(w=width, h=height))
        attributes.append(types.DocumentAttributeSticker(alt="", stickerset=types.InputStickerSetEmpty()))
    elif sim.kind == "animation":
        attributes.append(types.DocumentAttributeVideo(duration=duration, w=width, h=height, nosound=True))
        attributes.append(types.DocumentAttributeAnimated())
    if sim.name:
        attributes.append(types.DocumentAttributeFilename(file_name=sim.name))
    return attributes
