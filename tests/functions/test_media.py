"""`media` of a webhook event: every kind parses, a message may be only a file, and what its notification says."""

from __future__ import annotations

import uuid

import pytest

from functions._shared.errors import ValidationFailedError
from functions._shared.media import IncomingMedia, MediaKind, MediaUnavailable
from functions._shared.parsing import validate_model
from functions.telegram_crm_webhook import WebhookPayload

SHA = "ab" * 32


def event(**fields: object) -> dict[str, object]:
    return {"project_id": str(uuid.uuid4()), "account_phone": "+79990001122", "from_id": 42, "chat_id": 42,
            "message_id": 7, **fields}


@pytest.mark.parametrize("kind", [kind.value for kind in MediaKind])
def test_a_message_of_each_kind_without_text_is_valid(kind: str) -> None:
    payload = validate_model(WebhookPayload, event(text="", media={
        "kind": kind, "mime_type": "application/octet-stream", "file_name": None, "size": 3, "sha256": SHA,
        "url": "http://127.0.0.1:8090/media/1?token=t", "expires_at": "2026-12-01T10:00:00Z"}))
    assert payload.media is not None and payload.media.kind == kind
    assert payload.media.unavailable is None


def test_a_message_with_neither_text_nor_file_is_refused_naming_text() -> None:
    with pytest.raises(ValidationFailedError) as refused:
        validate_model(WebhookPayload, event(text=""))
    assert refused.value.field == "text"


def test_a_file_crm_server_could_not_get_has_its_reason() -> None:
    media = IncomingMedia.model_validate({"kind": "video", "size": 10**10, "url": None, "error": "too_large"})
    assert media.unavailable is MediaUnavailable.TOO_LARGE
    assert IncomingMedia.model_validate({"kind": "photo", "url": None}).unavailable is MediaUnavailable.UNAVAILABLE


def test_a_kind_crm_server_learns_later_is_a_document() -> None:
    assert IncomingMedia.model_validate({"kind": "story", "url": None}).kind is MediaKind.DOCUMENT


def test_a_malformed_sha256_is_refused_naming_media() -> None:
    with pytest.raises(ValidationFailedError) as refused:
        validate_model(WebhookPayload, event(text="", media={"kind": "photo", "sha256": "xyz", "url": None}))
    assert refused.value.field == "media"


@pytest.mark.parametrize(("media", "expected"), [
    ({"kind": "photo"}, "📷 Photo"),
    ({"kind": "voice"}, "🎤 Voice message"),
    ({"kind": "video_note"}, "📹 Video message"),
    ({"kind": "document", "file_name": "invoice.pdf"}, "📎 invoice.pdf"),
    ({"kind": "document"}, "📎 Document"),
])
def test_the_preview_of_a_file_without_text(media: dict[str, object], expected: str) -> None:
    payload = validate_model(WebhookPayload, event(media={"url": None, **media}))
    assert payload.preview() == expected


def test_the_preview_of_a_file_with_a_caption_is_the_caption() -> None:
    payload = validate_model(WebhookPayload, event(text="Look at this", media={"kind": "photo", "url": None}))
    assert payload.preview() == "Look at this"
