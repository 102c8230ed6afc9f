"""Phone numbers in E.164 (`+<country><number>`), the one form the functions store and send.

Telegram hands out phones as digits without `+`; people type spaces, dashes and brackets. All of it becomes E.164.
"""

from __future__ import annotations

import re

_FORMATTING = re.compile(r"[\s\-().]")
_E164_DIGITS = re.compile(r"[1-9]\d{6,14}")


def normalize_phone(value: str) -> str:
    """`value` as E.164, or ValueError when it cannot be a phone number.

    Accepts `+7 999 000-00-01`, `79990000001`, `0079990000001`; rejects letters and numbers of impossible length.
    """
    compact = _FORMATTING.sub("", value.strip())
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("00"):
        digits = compact[2:]
    else:
        digits = compact
    if not _E164_DIGITS.fullmatch(digits):
        raise ValueError("must be a phone number in international format, e.g. +79990000001")
    return "+" + digits


def normalize_phone_or_none(value: str | None) -> str | None:
    """Like `normalize_phone` for optional data from others: unreadable becomes None instead of an error."""
    if value is None:
        return None
    try:
        return normalize_phone(value)
    except ValueError:
        return None


def phone_digits(phone: str) -> str:
    """E.164 without the `+`: the form Wappi and Telegram contacts use."""
    return phone.lstrip("+")
