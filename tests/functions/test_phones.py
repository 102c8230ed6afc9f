"""Phones become E.164, whatever way people and Telegram write them."""

from __future__ import annotations

import pytest

from functions._shared.phones import normalize_phone, normalize_phone_or_none


@pytest.mark.parametrize(("given", "expected"), [
    ("+79990000001", "+79990000001"),
    ("79990000001", "+79990000001"),
    ("+7 (999) 000-00-01", "+79990000001"),
    ("0079990000001", "+79990000001"),
    (" +1 555 000 1234 ", "+15550001234"),
])
def test_readable_phones_become_e164(given: str, expected: str) -> None:
    assert normalize_phone(given) == expected


@pytest.mark.parametrize("given", ["", "+", "abc", "+0123456789", "12345", "+1234567890123456", "+7999abc0001"])
def test_impossible_phones_are_refused(given: str) -> None:
    with pytest.raises(ValueError):
        normalize_phone(given)


def test_optional_phones_from_others_are_dropped_not_fatal() -> None:
    assert normalize_phone_or_none("garbage") is None
    assert normalize_phone_or_none(None) is None
    assert normalize_phone_or_none("79990000001") == "+79990000001"
