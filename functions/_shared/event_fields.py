"""The fields every webhook event shares (the contract's "Conversation events"): Telegram ids, the account's phone,
the UTC timestamp, and `EventBase`, the part of each event type's model they make up.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated
from uuid import UUID

from pydantic import BeforeValidator, Field, field_validator

from functions._shared.parsing import RequestModel
from functions._shared.phones import normalize_phone


def _telegram_id(value: object) -> object:
    """Telegram ids arrive as JSON numbers or numeric strings; both become the decimal string."""
    if isinstance(value, bool):
        raise ValueError("must be a Telegram id (an integer)")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.strip().isascii():
        return str(int(value.strip()))
    raise ValueError("must be a Telegram id (an integer)")


def _optional_telegram_id(value: object) -> object:
    return None if value is None or value == "" else _telegram_id(value)


def phone_text(value: object) -> object:
    # Some senders put phones as JSON numbers (digits without `+`).
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def utc(value: datetime | None) -> datetime | None:
    # The contract's timestamps are UTC; a naive one is read as UTC rather than the server's local time.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


TelegramId = Annotated[str, BeforeValidator(_telegram_id)]
OptionalTelegramId = Annotated[str | None, BeforeValidator(_optional_telegram_id)]


class EventBase(RequestModel):
    """`event_id, project_id, account_phone, chat_id, timestamp`: what every event type carries."""

    event_id: str | None = Field(None, max_length=200)
    project_id: UUID
    account_phone: str = Field(max_length=40)
    chat_id: OptionalTelegramId = None
    timestamp: datetime | None = None

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("account_phone", mode="before")
    @classmethod
    def _account_phone_text(cls, value: object) -> object:
        return phone_text(value)

    @field_validator("account_phone")
    @classmethod
    def _account_phone(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return utc(value)
