"""Names of stored files: a sender's file name made safe as the last segment of a Storage object path, and the path
of an incoming message's file in `chat-media` (`<organization>/telegram/<integration>/<chat>/<message>-<name>`).
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata

from functions._shared.media import MediaKind

MAX_STEM_LENGTH = 80
MAX_EXTENSION_LENGTH = 10  # ".docx", ".webm", ".tar" ... a longer "extension" is part of the name
UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")
EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,%d}" % (MAX_EXTENSION_LENGTH - 1))

# The extension of a file Telegram sends without a name (photos never have one; voices and stickers rarely), when
# the mime type says nothing mimetypes knows.
KIND_EXTENSIONS: dict[MediaKind, str] = {
    MediaKind.PHOTO: ".jpg",
    MediaKind.VOICE: ".ogg",
    MediaKind.AUDIO: ".mp3",
    MediaKind.VIDEO: ".mp4",
    MediaKind.VIDEO_NOTE: ".mp4",
    MediaKind.DOCUMENT: ".bin",
    MediaKind.STICKER: ".webp",
    MediaKind.ANIMATION: ".mp4",
}
# mimetypes' first guess is not always the usual one (".jpe" for image/jpeg on some systems).
PREFERRED_EXTENSIONS = {"image/jpeg": ".jpg", "audio/ogg": ".ogg", "audio/mpeg": ".mp3", "video/mp4": ".mp4",
                        "image/webp": ".webp", "application/x-tgsticker": ".tgs", "video/webm": ".webm"}


def safe_file_name(file_name: str | None, mime_type: str | None, kind: MediaKind) -> str:
    """`file_name` as one path segment: ASCII (accents folded, other letters dropped), no slashes, dots only before
    the extension (so never `..`), bounded in length, its extension kept; a file without a usable name is named for
    its kind with the extension its mime type (or kind) suggests, e.g. `photo.jpg`."""
    stem, extension = _split(unicodedata.normalize("NFKD", file_name or "").encode("ascii", "ignore").decode())
    stem = UNSAFE_RUN.sub("_", stem).strip("_-")[:MAX_STEM_LENGTH].rstrip("_-")
    extension = extension.lower() or _extension_for(mime_type, kind)
    return f"{stem or kind.value}{extension}"


def _split(name: str) -> tuple[str, str]:
    # Only the last segment: a name like "../../etc/passwd" or "C:\\x\\y.pdf" is its last part.
    name = re.split(r"[/\\]", name)[-1].strip()
    stem, dot, extension = name.rpartition(".")
    if dot and stem and EXTENSION.fullmatch("." + extension):
        return stem, "." + extension
    return name, ""


def _extension_for(mime_type: str | None, kind: MediaKind) -> str:
    mime = (mime_type or "").split(";", 1)[0].strip().lower()
    extension = PREFERRED_EXTENSIONS.get(mime) or (mimetypes.guess_extension(mime) if mime else None)
    if extension and EXTENSION.fullmatch(extension):
        return extension
    return KIND_EXTENSIONS[kind]


def path_segment(value: str) -> str:
    """A Telegram id (or an event id standing in for one) as one path segment: `-100123` stays, anything else but
    letters, digits, `_` and `-` becomes `_`."""
    return UNSAFE_RUN.sub("_", value)[:100] or "_"


def incoming_object_path(organization_id: str, integration_id: str, chat_id: str, message_id: str,
                         file_name: str) -> str:
    """Where an incoming message's file is stored in chat-media: under its organization's folder (which the bucket's
    RLS lets that organization's users read), one folder per chat. The message id makes it unique per chat, so a
    redelivery writes the same object again (upsert) instead of a second one."""
    return "/".join((organization_id, "telegram", integration_id, path_segment(chat_id),
                     f"{path_segment(message_id)}-{file_name}"))
