"""Safe names of stored files, the object path of an incoming file, and the Content-Type it is stored with."""

from __future__ import annotations

import pytest

from functions._shared.media import MediaKind
from functions._shared.incoming_media import stored_content_type
from functions._shared.media_names import incoming_object_path, safe_file_name


@pytest.mark.parametrize(("given", "mime", "kind", "expected"), [
    ("invoice.pdf", "application/pdf", MediaKind.DOCUMENT, "invoice.pdf"),
    ("Счёт №5 для Ивана.PDF", None, MediaKind.DOCUMENT, "No5.pdf"),  # Cyrillic dropped, № folded, extension kept
    ("Café crème.docx", None, MediaKind.DOCUMENT, "Cafe_creme.docx"),  # accents folded to ASCII
    ("../../etc/passwd", None, MediaKind.DOCUMENT, "passwd.bin"),
    ("..\\..\\boot.ini", None, MediaKind.DOCUMENT, "boot.ini"),
    ("a..b...c.txt", None, MediaKind.DOCUMENT, "a_b_c.txt"),
    ("...", None, MediaKind.DOCUMENT, "document.bin"),
    (".bashrc", None, MediaKind.DOCUMENT, "bashrc.bin"),
    (None, "image/jpeg", MediaKind.PHOTO, "photo.jpg"),
    (None, None, MediaKind.PHOTO, "photo.jpg"),
    (None, "audio/ogg", MediaKind.VOICE, "voice.ogg"),
    (None, "video/mp4", MediaKind.VIDEO_NOTE, "video_note.mp4"),
    (None, "image/webp", MediaKind.STICKER, "sticker.webp"),
    ("", "application/x-unknown-thing", MediaKind.DOCUMENT, "document.bin"),
    ("report", "application/pdf", MediaKind.DOCUMENT, "report.pdf"),  # no extension: the mime type's
])
def test_file_names_become_one_safe_segment(given: str | None, mime: str | None, kind: MediaKind,
                                            expected: str) -> None:
    assert safe_file_name(given, mime, kind) == expected


def test_a_long_name_is_bounded_and_keeps_its_extension() -> None:
    name = safe_file_name("x" * 500 + ".pdf", None, MediaKind.DOCUMENT)
    assert name.endswith(".pdf") and len(name) <= 90 and "/" not in name


def test_the_object_path_is_under_the_organization_folder() -> None:
    path = incoming_object_path("org-1", "integration-2", "-100123", "event:a/b", "photo.jpg")
    assert path == "org-1/telegram/integration-2/-100123/event_a_b-photo.jpg"


@pytest.mark.parametrize(("given", "stored"), [
    ("image/jpeg", "image/jpeg"),
    ("application/pdf; charset=binary", "application/pdf"),
    ("text/html", "application/octet-stream"),  # a sender's page must not run on the project's origin
    ("image/svg+xml", "application/octet-stream"),
    ("IMAGE/SVG+XML", "application/octet-stream"),
    ("not a type", "application/octet-stream"),
    (None, "application/octet-stream"),
])
def test_stored_content_types_are_never_active_content(given: str | None, stored: str) -> None:
    assert stored_content_type(given) == stored
