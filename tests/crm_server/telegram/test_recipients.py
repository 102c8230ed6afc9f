"""The three forms of `to` and account phone normalization."""

from __future__ import annotations

import pytest

from crm_server.telegram.recipients import Recipient, normalize_phone, parse_recipient


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("@Alice_99", Recipient("username", "alice_99")),
        ("alice_99", Recipient("username", "alice_99")),
        ("+7 912 345-67-89", Recipient("phone", "79123456789")),
        ("123456789", Recipient("id", 123456789)),
        ("-1001234567890", Recipient("id", -1001234567890)),
        (42, Recipient("id", 42)),
    ],
)
def test_each_recipient_form_is_recognised(to: str | int, expected: Recipient) -> None:
    assert parse_recipient(to) == expected


@pytest.mark.parametrize("to", ["", "@", "@ab", "+12", "a b", "@bad-name", 0, "0", "+"])
def test_anything_else_is_refused(to: str | int) -> None:
    with pytest.raises(ValueError):
        parse_recipient(to)


def test_phones_are_normalized_to_plus_digits() -> None:
    assert normalize_phone("+1 (555) 000-1234") == "+15550001234"
    assert normalize_phone("15550001234") == "+15550001234"
    for bad in ("", "+", "phone", "+1234", "+1234567890123456"):
        with pytest.raises(ValueError):
            normalize_phone(bad)
