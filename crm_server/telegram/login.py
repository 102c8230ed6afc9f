"""A login between send-code and authorization, and Telegram's refusals of a login step as one table.

The phone code hash never leaves the `PendingLogin`; the account holds at most one at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from telethon import TelegramClient, errors as tg_errors

from crm_server import errors
from crm_server.telegram.clients import quiet_disconnect
from crm_server.telegram.sending import ErrorTable, map_error
from crm_server.telegram.session import StoreSession
from crm_server.telegram.states import CONNECTION_ERRORS

Answer = TypeVar("Answer")


@dataclass
class PendingLogin:
    client: TelegramClient
    session: StoreSession
    phone_code_hash: str
    expires_at: float
    password_required: bool = False


# What a login step may raise → the contract's error; the first row that matches wins.
LOGIN_ERRORS: ErrorTable = (
    ((tg_errors.PhoneCodeInvalidError, tg_errors.PhoneCodeEmptyError), lambda _: errors.InvalidCodeError(field="code")),
    (tg_errors.PasswordHashInvalidError, lambda _: errors.PasswordInvalidError(field="password")),
    ((tg_errors.PhoneNumberInvalidError, tg_errors.PhoneNumberBannedError),
     lambda _: errors.InvalidPhoneError(field="phone")),
    (tg_errors.PhoneNumberUnoccupiedError,
     lambda _: errors.InvalidPhoneError("No Telegram account uses this phone number", field="phone")),
    (tg_errors.FloodWaitError, lambda exc: errors.FloodWaitError(retry_after=exc.seconds)),
    (tg_errors.RPCError, lambda exc: errors.TelegramError(f"Telegram error {exc.message}")),
)


def login_error(exc: tg_errors.RPCError) -> errors.CrmError:
    mapped = map_error(LOGIN_ERRORS, exc)
    assert mapped is not None  # the last row takes every RPCError
    return mapped


async def first_login_request(client: TelegramClient, request: Callable[[TelegramClient], Awaitable[Answer]]) -> Answer:
    """Connect a client made for a login (code or QR) and make its first request. On any failure the client is
    disconnected, and Telegram's refusal or an unreachable Telegram is the contract's error (503 for the latter)."""
    try:
        await client.connect()
        return await request(client)
    except BaseException as exc:
        await quiet_disconnect(client)
        if isinstance(exc, tg_errors.RPCError):
            raise login_error(exc) from None
        if isinstance(exc, CONNECTION_ERRORS):
            raise errors.AccountDisconnectedError("Cannot reach Telegram") from None
        raise
