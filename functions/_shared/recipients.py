"""The ways to address a client on Telegram, in the order they are tried: chat id, user id, username, phone.

A numeric id works only when the sending account has met the user; a username or phone lets Telegram resolve them.
"""

from __future__ import annotations

from functions._shared.errors import RecipientUnknownError
from functions._shared.phones import normalize_phone_or_none, phone_digits
from functions._shared.rows import ClientRow, Provider


def recipient_candidates(client: ClientRow, provider: Provider) -> list[str]:
    """Distinct addresses for `client` in the provider's notation; 422 when the client has none."""
    candidates: list[str] = []
    for telegram_id in (client.telegram_chat_id, client.telegram_user_id):
        if telegram_id and telegram_id.strip():
            candidates.append(telegram_id.strip())
    username = (client.telegram_username or "").strip().lstrip("@")
    if username:
        # crm_server reads `@name` as a username; Wappi takes it with or without `@`.
        candidates.append("@" + username)
    phone = normalize_phone_or_none(client.phone)
    if phone:
        candidates.append(phone if provider == "telegram_crm" else phone_digits(phone))
    unique = list(dict.fromkeys(candidates))
    if not unique:
        raise RecipientUnknownError(field="clientId")
    return unique
