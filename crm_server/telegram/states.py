"""The words crm_server has for an account: its state in this process, a login's outcome, its key and status, and
the Telegram errors after which its session is dead.

The store keeps its own, smaller set (`crm_server.store.accounts.StoredStatus`): what survives a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from telethon import errors as tg_errors


class AccountState(StrEnum):
    """An account as this process sees it (the `state` of `/telegram/status`)."""

    # No usable session: it must log in (send-code, then sign-in) first.
    AUTH_REQUIRED = "auth_required"
    # Authorized, this process holds its lease, and its first connection is being made.
    CONNECTING = "connecting"
    # Live here: connected to Telegram, receiving updates, sending at once.
    CONNECTED = "connected"
    # Authorized, but its connection is lost (or not made yet): the supervisor reconnects with backoff.
    DISCONNECTED = "disconnected"
    # Telegram ended the session (revoked, deactivated) or it logged out: nothing retries it until a new login.
    LOGGED_OUT = "logged_out"
    # Another live crm_server instance holds its lease and runs it.
    HELD_ELSEWHERE = "held_elsewhere"


# States a waiting send can act on: live, or definitely not coming back soon.
SETTLED_STATES = frozenset({AccountState.CONNECTED, AccountState.LOGGED_OUT, AccountState.HELD_ELSEWHERE})


class LoginOutcome(StrEnum):
    """What a sign-in step ended as."""

    # The account is logged in and live.
    AUTHORIZED = "authorized"
    # The code was right and the account has 2FA: send the password next.
    PASSWORD_REQUIRED = "password_required"


@dataclass(frozen=True)
class AccountKey:
    project_id: str
    phone: str


@dataclass(frozen=True)
class AccountStatus:
    project_id: str
    phone: str
    state: AccountState
    authorized: bool
    connected: bool
    user_id: int | None
    username: str | None


# Errors after which a session can never work again: retrying would only hammer Telegram with a dead key.
TERMINAL_SESSION_ERRORS: tuple[type[BaseException], ...] = (
    tg_errors.AuthKeyUnregisteredError,
    tg_errors.AuthKeyDuplicatedError,
    tg_errors.AuthKeyInvalidError,
    tg_errors.SessionRevokedError,
    tg_errors.SessionExpiredError,
    tg_errors.UserDeactivatedError,
    tg_errors.UserDeactivatedBanError,
)

# What a lost connection raises under Telethon.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)


class SessionTerminated(Exception):
    """The account's session is dead (revoked, deactivated, duplicated): it must log in again."""
