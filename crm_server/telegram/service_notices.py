"""What a message from Telegram's service user (777000) says about the account's logins, without its text.

A login code or a new-login notice becomes `(alert, device, location)`; anything else is no alert. Only the device
and place lines are ever read out, and a value that could hold a code (a run of digits) is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Telegram writes these in the account's language; English and Russian are the ones our users get.
_LOGIN_CODE = re.compile(r"login code|код для входа|код подтверждения|your code", re.I)
_NEW_LOGIN = re.compile(r"new login|новый вход|detected a login|вход в ваш аккаунт", re.I)
_DEVICE = re.compile(r"^\s*(?:device|устройство)\s*:\s*(.+?)\s*$", re.I | re.M)
_LOCATION = re.compile(r"^\s*(?:location|местоположение|место)\s*:\s*(.+?)\s*$", re.I | re.M)
# A code is 5-6 digits; device names have short version numbers ("Windows 10", "iOS 17.2").
_CODE_LIKE = re.compile(r"\d{4,}")
_MAX_VALUE = 128


@dataclass(frozen=True)
class LoginNotice:
    alert: str  # "login_code" | "new_login"
    device: str | None
    location: str | None


def _value(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.search(text)
    if found is None:
        return None
    value = found.group(1)[:_MAX_VALUE]
    return None if _CODE_LIKE.search(value) else value


def login_notice(text: str) -> LoginNotice | None:
    """The login alert in a service message, or None (news, terms of service…: not forwarded at all)."""
    if _LOGIN_CODE.search(text):
        # A code message names no device worth showing; its text is the code: nothing of it is kept.
        return LoginNotice(alert="login_code", device=None, location=None)
    if _NEW_LOGIN.search(text):
        return LoginNotice(alert="new_login", device=_value(_DEVICE, text), location=_value(_LOCATION, text))
    return None
