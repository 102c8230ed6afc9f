"""The send functions' request (functions/_shared/sending.py): something to send, within Telegram's limits."""

from __future__ import annotations

import uuid

import pytest

from functions._shared.errors import ValidationFailedError
from functions._shared.parsing import validate_model
from functions._shared.sending import SendRequest

ORG = str(uuid.uuid4())


def test_send_needs_text_or_file() -> None:
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(SendRequest, {"clientId": ORG, "text": "   "})
    assert caught.value.field == "text"
    assert validate_model(SendRequest, {"clientId": ORG, "fileUrl": "https://x.example/a.png"}).text is None


def test_send_text_longer_than_telegram_allows_is_refused() -> None:
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(SendRequest, {"clientId": ORG, "text": "x" * 4097})
    assert caught.value.field == "text"
