"""QR login in the simulated world: login tokens a not-yet-authorized session exports, a logged-in phone accepts
(`scan`), and the `auth.exportLoginToken` / `importLoginToken` / `acceptLoginToken` answers Telethon's `qr_login` gets.

Tokens live in the world's SQLite, as password challenges do: a token exported through one crm_server process is
accepted and imported through any other on the same world file.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from telethon.tl import functions, types

from crm_server.sandbox import render
from crm_server.sandbox.errors import RpcFailure, SandboxError, UnknownAccount, UnknownUser
from crm_server.sandbox.world import SandboxWorld, phone_digits

# Telegram's login tokens live about 30 seconds; the client exports a new one when its QR code runs out.
DEFAULT_TOKEN_SECONDS = 30
# Tokens kept at most (each exporting session holds one): bounds the world against a token-minting loop.
_MAX_TOKENS = 4096
_URL_PREFIX = "tg://login?token="


class TokenExpired(SandboxError):
    """The scanned QR code's token ran out (or was replaced by a newer one): Telegram says AUTH_TOKEN_EXPIRED."""


class TokenInvalid(SandboxError):
    """The scanned QR code holds no token this world issued: AUTH_TOKEN_INVALID."""


class TokenAlreadyAccepted(SandboxError):
    """Another phone already scanned this QR code: AUTH_TOKEN_ALREADY_ACCEPTED."""


class TokenSession(Protocol):
    """The connection that exported a token (a sandbox sender): where `updateLoginToken` is pushed."""

    key_id: int

    def bind(self, account_id: int) -> None: ...

    def on_login_token(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS login_tokens (
    token BLOB NOT NULL UNIQUE,
    key_id INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    accepted_by INTEGER,
    -- 0 when the acceptance's updateLoginToken was lost on the way (scan with notify=False).
    notify INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS login_tokens_by_key ON login_tokens (key_id);
"""
_TOKEN_COLUMNS = "token, key_id, expires, accepted_by"


@dataclass(frozen=True, slots=True)
class _Token:
    token: bytes
    key_id: int
    expires: int  # unix seconds
    accepted_by: int | None = None


class LoginTokens:
    """The world's login tokens, by token and by the auth key that exported it (its newest one counts).

    Kept in the world's SQLite, so a token exported through one process is scanned and imported through any; the
    exporting session is told through the process it is connected to (world.live, whose watcher sees acceptances
    written by other processes)."""

    def __init__(self, world: SandboxWorld, token_seconds: int = DEFAULT_TOKEN_SECONDS) -> None:
        self.token_seconds = token_seconds
        self._world = world
        with world._write() as db:
            # Statement by statement: executescript would commit the transaction it runs in.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)

    def export(self, session: TokenSession) -> _Token:
        """A fresh token for this session; the one it had before is expired from now on (a new QR replaces it)."""
        now = int(time.time())
        token = _Token(token=os.urandom(32), key_id=session.key_id, expires=now + self.token_seconds)
        with self._world._write() as db:
            db.execute("UPDATE login_tokens SET expires = MIN(expires, ?) WHERE key_id = ?", (now - 1, token.key_id))
            db.execute("INSERT INTO login_tokens (token, key_id, expires) VALUES (?, ?, ?)",
                       (token.token, token.key_id, token.expires))
            # Expired tokens are kept a while so a late scan says "expired", not "invalid"; then dropped.
            db.execute("DELETE FROM login_tokens WHERE expires < ? AND accepted_by IS NULL", (now - 300,))
            db.execute("DELETE FROM login_tokens WHERE rowid NOT IN"
                       " (SELECT rowid FROM login_tokens ORDER BY rowid DESC LIMIT ?)", (_MAX_TOKENS,))
        self._world.live.wait_for_login_token(session)
        return token

    def accepted_for(self, key_id: int) -> _Token | None:
        """This key's token if a phone accepted it (taken: a token logs in once)."""
        with self._world._write() as db:
            row = db.execute(
                f"DELETE FROM login_tokens WHERE rowid = (SELECT rowid FROM login_tokens WHERE key_id = ?"
                f" ORDER BY rowid DESC LIMIT 1) AND accepted_by IS NOT NULL RETURNING {_TOKEN_COLUMNS}",
                (key_id,)).fetchone()
        if row is None:
            return None
        self._world.live.forget_login_token(key_id)
        return _token(row)

    def find(self, raw: bytes) -> _Token:
        row = self._world._one(f"SELECT {_TOKEN_COLUMNS} FROM login_tokens WHERE token = ?", (raw,))
        if row is None:
            raise TokenInvalid("no such login token")
        return _token(row)

    def accept(self, raw: bytes, user_id: int, *, notify: bool = True) -> None:
        """A logged-in user accepts the token: the exporting session is told (`updateLoginToken`), unless `notify`
        is False (an update lost on the way: the client learns it from its next export)."""
        with self._world._write() as db:
            row = db.execute(f"SELECT {_TOKEN_COLUMNS} FROM login_tokens WHERE token = ?", (raw,)).fetchone()
            if row is None:
                raise TokenInvalid("no such login token")
            token = _token(row)
            if token.expires < time.time():
                raise TokenExpired("the login token expired")
            if token.accepted_by is not None:
                raise TokenAlreadyAccepted("the login token was already accepted")
            db.execute("UPDATE login_tokens SET accepted_by = ?, notify = ? WHERE token = ?",
                       (user_id, int(notify), raw))
        self._world.live.login_token_accepted(token.key_id, notify=notify)


def _token(row: tuple) -> _Token:
    return _Token(token=bytes(row[0]), key_id=int(row[1]), expires=int(row[2]), accepted_by=row[3])


_TOKENS: weakref.WeakKeyDictionary[SandboxWorld, LoginTokens] = weakref.WeakKeyDictionary()
_TOKENS_LOCK = threading.Lock()


def tokens_of(world: SandboxWorld) -> LoginTokens:
    """The login tokens of `world` (the request handlers and the control route share them)."""
    with _TOKENS_LOCK:
        tokens = _TOKENS.get(world)
        if tokens is None:
            tokens = _TOKENS[world] = LoginTokens(world)
        return tokens


def token_from_url(url: str) -> bytes:
    """The token bytes of a `tg://login?token=<base64url>` URL (what the QR code holds); ValueError otherwise."""
    if not url.startswith(_URL_PREFIX):
        raise ValueError("not a tg://login?token= URL")
    encoded = url[len(_URL_PREFIX):]
    if not encoded or len(encoded) > 128:
        raise ValueError("not a login token")
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not a login token") from None


def scan(world: SandboxWorld, url: str, phone: str, *, notify: bool = True) -> int:
    """The account `phone` scans the QR code `url` (as its Telegram app would: auth.acceptLoginToken).
    Returns the scanner's user id; raises UnknownAccount, TokenInvalid, TokenExpired, TokenAlreadyAccepted, ValueError.
    """
    raw = token_from_url(url)
    try:
        user_id = world.user_id_of("+" + phone_digits(phone))
    except UnknownUser:
        user_id = None
    if user_id is None or all(account.id != user_id for account in world.accounts()):
        raise UnknownAccount(f"{phone} is not logged in to the sandbox world")
    tokens_of(world).accept(raw, user_id, notify=notify)
    return user_id


class QrLoginHandlers:
    """The TL requests of a QR login, answered from the world and its tokens (hooked into RequestHandlers)."""

    def __init__(self, world: SandboxWorld) -> None:
        self._world = world

    def public(self) -> dict[type, object]:
        return {
            functions.auth.ExportLoginTokenRequest: self.export_login_token,
            functions.auth.ImportLoginTokenRequest: self.import_login_token,
        }

    def private(self) -> dict[type, object]:
        return {functions.auth.AcceptLoginTokenRequest: self.accept_login_token}

    def _success_or_password(self, token: _Token, session: TokenSession) -> object:
        user_id = token.accepted_by
        assert user_id is not None
        if self._world.password_verifier(user_id) is not None:
            # As with a code: the key may now only check the 2FA password (account.getPassword, auth.checkPassword).
            self._world.set_password_pending(session.key_id, user_id)
            raise RpcFailure(401, "SESSION_PASSWORD_NEEDED")
        session.bind(user_id)
        user = self._world.user(user_id)
        assert user is not None
        return types.auth.LoginTokenSuccess(
            authorization=types.auth.Authorization(user=render.user(self._world, user_id, user))
        )

    def export_login_token(
        self, request: functions.auth.ExportLoginTokenRequest, session: TokenSession, account_id: int | None
    ) -> object:
        tokens = tokens_of(self._world)
        accepted = tokens.accepted_for(session.key_id)
        if accepted is not None:
            return self._success_or_password(accepted, session)
        token = tokens.export(session)
        return types.auth.LoginToken(
expires=_utc(token.expires), token=token.token
        )

    def import_login_token(
        self, request: functions.auth.ImportLoginTokenRequest, session: TokenSession, account_id: int | None
    ) -> object:
        tokens = tokens_of(self._world)
        try:
            token = tokens.find(request.token)
        except TokenInvalid:
            raise RpcFailure(400, "AUTH_TOKEN_INVALID") from None
        if token.accepted_by is None:
            if token.expires < time.time():
                raise RpcFailure(400, "AUTH_TOKEN_EXPIRED")
            return types.auth.LoginToken(expires=_utc(token.expires), token=token.token)
        taken = tokens.accepted_for(token.key_id)
        if taken is None:
            raise RpcFailure(400, "AUTH_TOKEN_ALREADY_ACCEPTED")
        return self._success_or_password(taken, session)

    def accept_login_token(
        self, request: functions.auth.AcceptLoginTokenRequest, session: TokenSession, account_id: int
    ) -> object:
        try:
            tokens_of(self._world).accept(request.token, account_id)
        except TokenExpired:
            raise RpcFailure(400, "AUTH_TOKEN_EXPIRED") from None
        except TokenAlreadyAccepted:
            raise RpcFailure(400, "AUTH_TOKEN_ALREADY_ACCEPTED") from None
        except TokenInvalid:
            raise RpcFailure(400, "AUTH_TOKEN_INVALID") from None
        now = int(time.time())
        return types.Authorization(
            hash=int.from_bytes(os.urandom(7), "big"), device_model="tgcrm crm_server", platform="sandbox",
            system_version="1.0", api_id=1, app_name="tgcrm", app_version="0.1.0", date_created=_utc(now),
            date_active=_utc(now), ip="127.0.0.1", country="ZZ", region="",
        )


def _utc(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)
