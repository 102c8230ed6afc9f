"""The file of an incoming message as crm_server describes it in a webhook event (`media`, the contract's "Media"),
parsed once at the boundary, and what a notification says about a message that has only a file.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from enum import StrEnum

from pydantic import Field, field_validator

from functions._shared.parsing import RequestModel

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class MediaKind(StrEnum):
    """The contract's kinds of Telegram files."""

    PHOTO = "photo"
    VOICE = "voice"
    AUDIO = "audio"
    VIDEO = "video"
    VIDEO_NOTE = "video_note"
    DOCUMENT = "document"
    STICKER = "sticker"
    ANIMATION = "animation"


class MediaUnavailable(StrEnum):
    """Why a message is stored without its file: crm_server's reasons (`media.error`), then ours."""

    TOO_LARGE = "too_large"  # over crm_server's CRM_MEDIA_MAX_BYTES, or over our FUNCTIONS_MEDIA_MAX_BYTES
    UNAVAILABLE = "unavailable"  # crm_server could not download it from Telegram
    FOREIGN_URL = "foreign_url"  # media.url is not on the integration's own crm_server: never fetched
    EXPIRED = "expired"  # media.url expired before this delivery: fetching it can never succeed


# What a notification says about a message without text (the CRM's language is Russian and English; the emoji
# carry the meaning in both).
PREVIEWS: dict[MediaKind, str] = {
    MediaKind.PHOTO: "📷 Photo",
    MediaKind.VOICE: "🎤 Voice message",
    MediaKind.AUDIO: "🎵 Audio",
    MediaKind.VIDEO: "🎬 Video",
    MediaKind.VIDEO_NOTE: "📹 Video message",
    MediaKind.DOCUMENT: "📎 Document",
    MediaKind.STICKER: "Sticker",
    MediaKind.ANIMATION: "GIF",
}


class IncomingMedia(RequestModel):
    """`media` of a webhook event. Only `kind` is required: a message is never refused for what its file lacks."""

    kind: MediaKind
    mime_type: str | None = Field(None, max_length=255)
    file_name: str | None = Field(None, max_length=255)
    size: int | None = Field(None, ge=0)
    sha256: str | None = None
    url: str | None = Field(None, max_length=4000)
    expires_at: datetime | None = None
    error: str | None = Field(None, max_length=100)

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: object) -> object:
        # A kind crm_server learns later (Telegram adds some) is still a file: stored as a document rather than a
        # 422, which would dead-letter the message.
        if isinstance(value, str) and value not in MediaKind.__members__.values():
            return MediaKind.DOCUMENT
        return value

    @field_validator("mime_type", "file_name", "url", "error", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not SHA256_HEX.fullmatch(value):
            raise ValueError("sha256 must be 64 hexadecimal digits")
        return value

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value

    @property
    def unavailable(self) -> MediaUnavailable | None:
        """crm_server's reason for sending no URL (None when there is a URL to fetch)."""
        if self.url is not None:
            return None
        return MediaUnavailable.TOO_LARGE if self.error == MediaUnavailable.TOO_LARGE else MediaUnavailable.UNAVAILABLE

    def preview(self) -> str:
        """The notification's text for this file when the message has no text: a document by its name."""
        if self.kind in (MediaKind.DOCUMENT, MediaKind.AUDIO) and self.file_name:
            return f"📎 {self.file_name}"
        return PREVIEWS[self.kind]
