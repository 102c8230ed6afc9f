"""QR logins: pending logins without a code, each keyed by a random `login_id`, following Telethon's `QRLogin` until
a phone scans it (its token refreshed before it runs out), then handing the authorized session to its account.

A QR login may start without a phone: its account is the one that scanned it, known only once it is authorized.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from telethon import TelegramClient, errors as tg_errors
from telethon.tl import custom, types

from crm_server import errors
from crm_server.settings import ServerSettings
from crm_server.telegram.clients import ClientFactory, quiet_disconnect
from crm_server.telegram.login import first_login_request, login_error
from crm_server.telegram.session import StoreSession
from crm_server.telegram.states import CONNECTION_ERRORS, AccountKey

log = logging.getLogger(__name__)

# A token is refreshed this long before it expires (at most a quarter of its life): a QR code shown
# must never be one Telegram already refuses.
REFRESH_MARGIN_SECONDS = 5.0
# Pending QR logins per project; a new one beyond this ends the oldest (each holds a connection to Telegram).
MAX_QR_LOGINS_PER_PROJECT = 4

# How long an ended login stays readable after its end, so a late poll learns "expired" rather than 404.
LINGER_SECONDS = 120.0

# Hands an authorized session to its account: (project_id, phone, session, Telegram's User).
AdoptSession = Callable[[str, str, StoreSession, Any], Awaitable[None]]


class QrStatus(StrEnum):
    # Waiting for a phone to scan the QR code (`url`).
    QR = "qr"
    # Scanned by an account with 2FA: send its password (POST /telegram/auth/password with the login_id).
    PASSWORD_REQUIRED = "password_required"
    # Logged in: the account (`phone`) is live.
    AUTHORIZED = "authorized"
    # Ran out of time, or ended by an error (`error`): start a new QR login.
    EXPIRED = "expired"


@dataclass(frozen=True)
class QrView:
    """What a poll of a QR login answers."""

    login_id: str
    status: QrStatus
    url: str | None
    expires_at: datetime.datetime | None
    phone: str | None
    error: errors.CrmError | None


def _phone_of(user: Any) -> str:
    digits = "".join(ch for ch in str(getattr(user, "phone", "") or "") if ch.isdigit())
    if not digits:
        # Telegram always tells an account its own phone; without one we could not key the account.
        raise errors.TelegramError("Telegram did not tell the logged-in account's phone number")
    return f"+{digits}"


class QrLogin:
    """One QR login: its client (not yet authorized), the QRLogin it follows, and where it got to."""

    def __init__(self, login_id: str, project_id: str, phone: str | None, client: TelegramClient,
                 session: StoreSession, qr: custom.QRLogin, deadline: float, adopt: AdoptSession) -> None:
        self.login_id = login_id
        self.project_id = project_id
        self.phone = phone  # as asked for; the scanning account must be this one
        self.deadline = deadline  # monotonic: the whole login ends then, scanned or not
        self.status = QrStatus.QR
        self.error: errors.CrmError | None = None
        self.authorized_phone: str | None = None
        self.lock = asyncio.Lock()  # one step at a time: the follower's end, or a password check
        self._client = client
        self._session = session
        self._qr = qr
        self._adopt = adopt
        self._task: asyncio.Task[None] | None = None
        # The code shown, kept apart from the QRLogin: an export that found the scan holds no token any more.
        self._url: str = qr.url
        self._expires: datetime.datetime = qr.expires

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name=f"crm-qr-login-{self.login_id[:8]}")

    def view(self) -> QrView:
        if self.status == QrStatus.QR and time.monotonic() >= self.deadline:
            status = QrStatus.EXPIRED  # the follower is about to say so; never show a QR code past the login's end
        else:
            status = self.status
        showing = status == QrStatus.QR
        return QrView(
            login_id=self.login_id,
            status=status,
            url=self._url if showing else None,
            expires_at=self._expires if showing else None,
            phone=self.authorized_phone or self.phone,
            error=self.error,
        )

    @property
    def finished(self) -> bool:
        return self.status in (QrStatus.AUTHORIZED, QrStatus.EXPIRED)

    async def _follow(self) -> None:
        """Wait for the scan, refreshing the token before it expires, until authorized, 2FA, error or the end."""
        try:
            while True:
                try:
                    user = await self._qr.wait(timeout=self._refresh_in())
                except asyncio.TimeoutError:
                    if time.monotonic() >= self.deadline:
                        await self._end(QrStatus.EXPIRED)
                        return
                    user = await self._recreate()
                    if user is None:
                        continue
                async with self.lock:
                    await self._authorized(user)
                return
        except tg_errors.SessionPasswordNeededError:
            self.status = QrStatus.PASSWORD_REQUIRED
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(exc)

    def _refresh_in(self) -> float:
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        life = (self._expires - now).total_seconds()
        refresh = life - min(REFRESH_MARGIN_SECONDS, max(life, 0.0) / 4)
        return max(0.2, min(refresh, self.deadline - time.monotonic()))

    async def _recreate(self) -> Any | None:
        """A new token for the QR code. A scan that landed just before makes Telegram answer this export with the
        login itself (auth.loginTokenSuccess, or SESSION_PASSWORD_NEEDED): then the authorized user, else None."""
        await self._qr.recreate()
        answer = getattr(self._qr, "_resp", None)  # QRLogin keeps the last answer there; `.url` needs a token
        if isinstance(answer, types.auth.LoginTokenSuccess):
            return answer.authorization.user
        if not isinstance(answer, types.auth.LoginToken):
            raise errors.TelegramError(f"Unexpected answer to a QR login token export: {type(answer).__name__}")
        self._url, self._expires = self._qr.url, self._qr.expires
        return None

    async def check_password(self, password: str) -> None:
        async with self.lock:
            if self.status != QrStatus.PASSWORD_REQUIRED:
                raise errors.LoginNotStartedError("This QR login does not wait for a 2FA password")
            try:
                user = await self._client.sign_in(password=password)
            except tg_errors.RPCError as exc:
                raise login_error(exc) from None  # a wrong password may be tried again
            try:
                await self._authorized(user)
            except Exception as exc:
                await self._fail(exc)
            if self.error is not None:
                raise self.error

    async def _authorized(self, user: Any) -> None:
        phone = _phone_of(user)
        if self.phone is not None and phone != self.phone:
            # Another account scanned it: that session is not the one asked for, so it must not stay logged in.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.log_out(), timeout=10)
            raise errors.InvalidPhoneError("The QR code was scanned by another account than this phone's",
                                           field="phone")
        # This client only logged in; the account connects its own from the session (with its update listener).
        await quiet_disconnect(self._client)
        try:
            await self._adopt(self.project_id, phone, self._session, user)
        except BaseException:
            # No account took the session (e.g. the phone is another project's): it must not stay logged in.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._log_out_again(), timeout=10)
            raise
        self.authorized_phone = phone
        self.status = QrStatus.AUTHORIZED
        log.info("QR login %s… of project %s logged in account %s", self.login_id[:8], self.project_id, phone)

    async def _log_out_again(self) -> None:
        await self._client.connect()
        try:
            await self._client.log_out()
        finally:
            await quiet_disconnect(self._client)

    async def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, errors.CrmError):
            error = exc
        elif isinstance(exc, tg_errors.RPCError):
            error = login_error(exc)
        elif isinstance(exc, CONNECTION_ERRORS):
            error = errors.AccountDisconnectedError("Cannot reach Telegram")
        else:
            log.warning("QR login %s… failed (%s)", self.login_id[:8], type(exc).__name__)
            error = errors.TelegramError("The QR login failed")
        self.error = error
        await self._end(QrStatus.EXPIRED)

    async def _end(self, status: QrStatus) -> None:
        self.status = status
        await quiet_disconnect(self._client)

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.status != QrStatus.AUTHORIZED:
            await quiet_disconnect(self._client)
            if self.status != QrStatus.EXPIRED:
                self.status = QrStatus.EXPIRED


class QrLogins:
    """This process's pending QR logins by login_id (a poll must reach the instance that started it)."""

    def __init__(self, settings: ServerSettings, adopt: AdoptSession) -> None:
        self._settings = settings
        # Login clients listen to nothing: the account's own client, built once the phone is known, does.
        self._clients = ClientFactory(settings)
        self._adopt = adopt
        self._logins: dict[str, QrLogin] = {}

    async def start(self, project_id: str, phone: str | None) -> QrLogin:
        """Connect a fresh client and export the first token (Telethon's `qr_login`)."""
        session = StoreSession()
        dc = self._settings.telegram_dc_address()
        if dc is not None:
            session.set_dc(*dc)
        client = self._clients.build(session, AccountKey(project_id, phone or ""))
        qr = await first_login_request(client, lambda client: client.qr_login())
        await self._make_room(project_id)
        login = QrLogin(secrets.token_urlsafe(24), project_id, phone, client, session, qr,
                        time.monotonic() + self._settings.login_ttl_seconds, self._adopt)
        self._logins[login.login_id] = login
        login.start()
        return login

    def has(self, login_id: str) -> bool:
        return login_id in self._logins

    def get(self, project_id: str, login_id: str) -> QrLogin:
        """The project's QR login; another project's is as unknown as one that never was (404 for both)."""
        login = self._logins.get(login_id)
        if login is None or not secrets.compare_digest(login.project_id, project_id):
            raise errors.LoginNotFoundError(field="login_id")
        return login

    async def _make_room(self, project_id: str) -> None:
        own = [login for login in self._logins.values() if login.project_id == project_id]
        for login in own[: max(0, len(own) - MAX_QR_LOGINS_PER_PROJECT + 1)]:
            self._logins.pop(login.login_id, None)
            await login.close()

    async def drop_expired(self) -> None:
        """End logins past their end, and forget them a while later (until then a poll still sees the outcome)."""
        now = time.monotonic()
        for login_id, login in list(self._logins.items()):
            if login.deadline <= now and not login.finished:
                await login.close()
            if login.deadline + LINGER_SECONDS <= now:
                self._logins.pop(login_id, None)
                await login.close()

    async def close_all(self) -> None:
        logins, self._logins = list(self._logins.values()), {}
        await asyncio.gather(*(login.close() for login in logins))
