"""The three ways the contract names a recipient in `to`: `@username`, a numeric user/chat id, or a phone `+…`.

Shared by request validation (models) and by resolution (telegram), so both agree on what each form is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

USERNAME = re.compile(r"@?([A-Za-z][A-Za-z0-9_]{2,31})")
NUMERIC_ID = re.compile(r"-?[1-9]\d{0,19}")
PHONE = re.compile(r"\+(\d{5,15})")


@dataclass(frozen=True)
class Recipient:
    kind: Literal["username", "id", "phone"]
    # username without "@", the id as int, or the phone's digits without "+".
    value: str | int


def parse_recipient(to: str | int) -> Recipient:
    """Classify `to`; ValueError if it is none of the three forms."""
    if isinstance(to, int):
        if to == 0:
            raise ValueError("an id cannot be 0")
        return Recipient("id", to)
    to = to.strip()
    if NUMERIC_ID.fullmatch(to):
        return Recipient("id", int(to))
    phone = PHONE.fullmatch(to.replace(" ", "").replace("-", ""))
    if phone:
        return Recipient("phone", phone.group(1))
    username = USERNAME.fullmatch(to)
    if username:
        return Recipient("username", username.group(1).lower())
    raise ValueError("must be @username, a numeric id, or a phone number like +15551234567")


def normalize_phone(value: str) -> str:
    """An account or user phone as `+digits` (spaces, dashes and parentheses dropped); ValueError otherwise."""
    cleaned = re.sub(r"[\s\-()]", "", value)
    if cleaned.startswith("+"):
        cleaned = cleaned[1:]
    if not re.fullmatch(r"\d{5,15}", cleaned):
        raise ValueError("must be a phone number like +15551234567")
    return "+" + cleaned
