"""`Account`: one Telegram account of one project in this process; it owns its client, session, pending login,
lease and supervision, and sends from its client. It is handed what it needs (`AccountContext`), not the manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from telethon import TelegramClient, errors as tg_errors

from crm_server import errors
from crm_server.media.outgoing import OutgoingFile
from crm_server.settings import ServerSettings
from crm_server.store.accounts import AccountTable
from crm_server.store.pending_logins import PendingLoginTable, StoredLogin
from crm_server.telegram import sending
from crm_server.telegram.clients import ClientFactory, quiet_disconnect
from crm_server.telegram.login import PendingLogin, first_login_request, login_error
from crm_server.telegram.pacing import TokenBucket
from crm_server.telegram.recipients import Recipient
from crm_server.telegram.sending import SendResult
from crm_server.telegram.session import StoreSession
from crm_server.webhooks.events import AccountStatusChanged
from crm_server.telegram.states import (
    CONNECTION_ERRORS,
    SETTLED_STATES,
    TERMINAL_SESSION_ERRORS,
    AccountKey,
    AccountState,
    LoginOutcome,
    SessionTerminated,
)

log = logging.getLogger(__name__)

# How long a send that lost its connection waits to learn whether the session was revoked (409, not 503).
REVOKED_VERDICT_SECONDS = 1.0

ClientStartedHook = Callable[[AccountKey, TelegramClient], Awaitable[None]]


@dataclass(frozen=True)
class AccountContext:
    """What the accounts of one manager share."""

    table: AccountTable  # their rows in the store
    owner_id: str  # this server's lease owner id
    settings: ServerSettings
    clients: ClientFactory
    connect_slot: Callable[[], AbstractAsyncContextManager[None]]  # paces connection starts (ConnectPacer.slot)
    on_client_started: list[ClientStartedHook]  # run for every new live client
    stopping: Callable[[], bool]  # the server is shutting down: start and reconnect nothing
    # Receives the account's `account.status` events (the webhook wing's listener); None: nobody is told.
    on_status: StatusHandler | None = None
    # Pending logins in the store, so another instance can finish one started here (None: memory only, a CLI login).
    logins: PendingLoginTable | None = None
    # Told every change of an account's state (the manager writes it to the store for the other instances).
    on_state: Callable[[AccountKey, AccountState], None] | None = None
    # Told when this process takes or loses an account's lease: "taken" | "lost" (metrics).
    on_lease: Callable[[str], None] | None = None


class StatusHandler(Protocol):
    async def __call__(self, event: AccountStatusChanged) -> None: ...


class Account:
    def __init__(self, key: AccountKey, context: AccountContext) -> None:
        self.key = key
        self._context = context
        settings = context.settings
        self.bucket = TokenBucket(settings.send_rate_per_minute / 60.0, settings.send_burst)
        self.state = AccountState.AUTH_REQUIRED
        self.user_id: int | None = None
        self.username: str | None = None
        self.client: TelegramClient | None = None
        self.session: StoreSession | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._login: PendingLogin | None = None
        self._flood_until = 0.0
        # When this process took the account's lease (monotonic), None when it holds none.
        self.lease_since: float | None = None
        # Held by a login step, a start or a logout: the lease loop leaves a busy account alone.
        self.lock = asyncio.Lock()
        # Set while the state is one a waiting send can act on (connected, or definitely not coming back).
        self.settled = asyncio.Event()

    def set_state(self, state: AccountState) -> None:
        changed = state != self.state
        self.state = state
        if changed and self._context.on_state is not None:
            self._context.on_state(self.key, state)
        if state in SETTLED_STATES:
            self.settled.set()
        else:
            self.settled.clear()

    @property
    def running(self) -> bool:
        """Holds (or is acquiring) the lease: a client is, or is about to be, live here."""
        return (self._supervisor is not None and not self._supervisor.done()) or self._login is not None

    @property
    def logging_in(self) -> bool:
        return self._login is not None

    @property
    def live(self) -> bool:
        return self.state == AccountState.CONNECTED and self.client is not None

    # --- the lease ------------------------------------------------------------------------------------------------

    async def acquire_lease(self) -> bool:
        acquired = await self._context.table.acquire_lease(
            self.key.project_id, self.key.phone, self._context.owner_id, self._context.settings.lease_ttl_seconds
        )
        if acquired and self.lease_since is None:
            self.lease_since = time.monotonic()
            if self._context.on_lease is not None:
                self._context.on_lease("taken")
        return acquired

    async def release_lease(self) -> None:
        self.lease_since = None
        await self._context.table.release_lease(self.key.project_id, self.key.phone, self._context.owner_id)

    async def start(self) -> bool:
        """Take the lease and start the supervisor that keeps the account connected. False if held elsewhere."""
        async with self.lock:
            if self.running or self._context.stopping():
                return self.running
            if not await self.acquire_lease():
                self.set_state(AccountState.HELD_ELSEWHERE)
                return False
            self.set_state(AccountState.CONNECTING)
            self._supervisor = asyncio.create_task(self.supervise(), name=f"crm-account-{self.key.phone}")
            return True

    # --- login ------------------------------------------------------------------------------------------------------

    async def begin_login(self) -> int | None:
        """Telegram sends the code. Returns the code's timeout in seconds, if Telegram gives one."""
        async with self.lock:
            if self.state == AccountState.CONNECTED:
                raise errors.ValidationError("This account is already logged in", field="phone")
            if not await self.acquire_lease():
                raise errors.AccountDisconnectedError("Another crm_server instance runs this account")
            # A fresh login replaces whatever ran before (a stale login, a dead or reconnecting client).
            await self.stop(AccountState.AUTH_REQUIRED)
            session = StoreSession()
            dc = self._context.settings.telegram_dc_address()
            if dc is not None:
                session.set_dc(*dc)
            client = self._context.clients.build(session, self.key)
            sent = await first_login_request(client, lambda client: client.send_code_request(self.key.phone))
            self._login = PendingLogin(
                client=client,
                session=session,
                phone_code_hash=sent.phone_code_hash,
                expires_at=time.monotonic() + self._context.settings.login_ttl_seconds,
            )
            await self._store_login(self._login)
            timeout = getattr(sent, "timeout", None)
            return int(timeout) if timeout is not None else None

    async def sign_in(self, code: str) -> LoginOutcome:
        """Finish a login with the code; PASSWORD_REQUIRED when the account has 2FA."""
        async with self.lock:
            login = await self._live_login()
            try:
                user = await login.client.sign_in(
                    phone=self.key.phone, code=code, phone_code_hash=login.phone_code_hash
                )
            except tg_errors.SessionPasswordNeededError:
                login.password_required = True
                await self._store_login(login)
                return LoginOutcome.PASSWORD_REQUIRED
            except tg_errors.PhoneCodeExpiredError:
                await self.drop_login(forget=True)
                raise errors.InvalidCodeError("The login code expired; request a new one", field="code") from None
            except tg_errors.RPCError as exc:
                raise login_error(exc) from None
            await self.complete_login(user)
            return LoginOutcome.AUTHORIZED

    async def check_password(self, password: str) -> LoginOutcome:
        async with self.lock:
            login = await self._live_login()
            if not login.password_required:
                raise errors.LoginNotStartedError("Sign in with the code before sending the 2FA password")
            try:
                user = await login.client.sign_in(password=password)
            except tg_errors.RPCError as exc:
                raise login_error(exc) from None
            await self.complete_login(user)
            return LoginOutcome.AUTHORIZED

    async def complete_login(self, user: Any) -> None:
        login = self._login
        assert login is not None
        key = self.key
        self._login = None
        await self._forget_stored_login()
        login.session.enable_persistence(self._persist)
        if self._context.clients.listening:
            # Wake the update loop so it records the state loaded at sign-in: a restart from then on catches up.
            await login.client.catch_up()
        await self._context.table.mark_authorized(key.project_id, key.phone, user.id, user.username)
        await login.session.flush()
        self.session = login.session
        self.user_id = user.id
        self.username = user.username
        self._flood_until = 0.0
        # Live at once: a send right after sign-in must not race the supervisor task's first step.
        self.client = login.client
        self.set_state(AccountState.CONNECTED)
        self._supervisor = asyncio.create_task(self.supervise(login.client), name=f"crm-account-{key.phone}")
        log.info("account %s of project %s logged in", key.phone, key.project_id)
        await self._tell_status("authorized", "login")

    async def _tell_status(self, state: str, reason: str) -> None:
        """Hand an `account.status` event to the outbox (best effort: the state itself is stored already)."""
        handler = self._context.on_status
        if handler is None:
            return
        event = AccountStatusChanged(project_id=self.key.project_id, account_phone=self.key.phone, state=state,
                                     reason=reason, date=datetime.datetime.now(datetime.timezone.utc))
        try:
            await handler(event)
        except Exception as exc:
            log.warning("account %s: status event not enqueued (%s)", self.key.phone, type(exc).__name__)

    async def adopt_session(self, session: StoreSession, user: Any) -> None:
        """A session authorized by a login made without this account's client (a QR login) becomes the account's:
        stored, then connected by the supervisor like a restarted account."""
        async with self.lock:
            if not await self.acquire_lease():
                raise errors.AccountDisconnectedError("Another crm_server instance runs this account")
            # The new session replaces whatever ran before (a pending code login, an older session).
            await self.stop(AccountState.AUTH_REQUIRED)
            key = self.key
            session.enable_persistence(self._persist)
            await self._context.table.mark_authorized(key.project_id, key.phone, user.id, user.username)
            await session.flush()
            self.session = session
            self.user_id = user.id
            self.username = user.username
            self._flood_until = 0.0
            self.set_state(AccountState.CONNECTING)
            self._supervisor = asyncio.create_task(self.supervise(), name=f"crm-account-{key.phone}")
            log.info("account %s of project %s logged in (QR)", key.phone, key.project_id)

    async def _live_login(self) -> PendingLogin:
        """The login in progress: this process's, or one another instance started (stored), resumed here."""
        login = self._login
        if login is not None and login.expires_at >= time.monotonic():
            return login
        if login is None:
            restored = await self._restore_login()
            if restored is not None:
                return restored
        raise errors.LoginNotStartedError()

    async def _restore_login(self) -> PendingLogin | None:
        """A login whose code was requested by another instance (gone, or it handed the lease over): the code is
        valid on the session it was requested on, so that session is rebuilt here and the login goes on."""
        table = self._context.logins
        if table is None:
            return None
        stored = await table.load(self.key.project_id, self.key.phone)
        if stored is None:
            return None
        if not await self.acquire_lease():
            raise errors.AccountDisconnectedError("Another crm_server instance runs this account")
        session = StoreSession.from_bytes(stored.session.encode())
        client = self._context.clients.build(session, self.key)
        try:
            await client.connect()
        except BaseException as exc:
            await quiet_disconnect(client)
            if isinstance(exc, CONNECTION_ERRORS):
                raise errors.AccountDisconnectedError("Cannot reach Telegram") from None
            raise
        self._login = PendingLogin(client=client, session=session, phone_code_hash=stored.phone_code_hash,
                                   expires_at=time.monotonic() + max(0.0, stored.expires_at - time.time()),
                                   password_required=stored.password_required)
        log.info("account %s: login resumed from the store", self.key.phone)
        return self._login

    async def _store_login(self, login: PendingLogin) -> None:
        table = self._context.logins
        if table is None:
            return
        remaining = login.expires_at - time.monotonic()
        await table.save(self.key.project_id, self.key.phone, StoredLogin(
            phone_code_hash=login.phone_code_hash, password_required=login.password_required,
            session=login.session.to_bytes().decode(), expires_at=time.time() + remaining))

    async def _forget_stored_login(self) -> None:
        if self._context.logins is not None:
            await self._context.logins.delete(self.key.project_id, self.key.phone)

    async def drop_login(self, *, forget: bool = False) -> None:
        """Disconnect the login's client; with `forget`, the stored login goes too (else another instance, or this
        one after a restart, may still finish it)."""
        login, self._login = self._login, None
        if login is not None:
            await quiet_disconnect(login.client)
        if forget:
            await self._forget_stored_login()

    async def drop_expired_login(self) -> None:
        if self._login is not None and self._login.expires_at < time.monotonic():
            async with self.lock:
                await self.drop_login(forget=True)

    async def log_out(self) -> None:
        """Log out of Telegram (best effort) and forget the session; the caller holds `lock`."""
        await self.drop_login(forget=True)
        client = self.client
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        if client is not None and client.is_connected():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.log_out(), timeout=10)
        if self.session is not None:
            self.session.disable_persistence()
        if client is not None:
            await quiet_disconnect(client)
        self.client = None
        self.session = None
        self.set_state(AccountState.LOGGED_OUT)
        await self._tell_status("logged_out", "logout")

    # --- sending ----------------------------------------------------------------------------------------------------

    async def send(self, recipient: Recipient, text: str | None, *, file: OutgoingFile | None,
                   reply_to: int | None) -> SendResult:
        """Send from the live client, paced; Telethon's refusals become the contract's errors."""
        client = self.client
        assert client is not None
        remaining_flood = self._flood_until - time.monotonic()
        if remaining_flood > 0:
            raise errors.FloodWaitError(retry_after=remaining_flood)
        wait = self.bucket.take()
        if wait > 0:
            raise errors.RateLimitedError(retry_after=wait)
        try:
            return await sending.send_to(client, recipient, text, file=file, reply_to=reply_to)
        except errors.CrmError:
            raise
        except BaseException as exc:
            raise await self._send_failed(exc) from None

    async def mark_read(self, chat: Recipient, max_id: int) -> None:
        """messages.readHistory on the chat up to `max_id` (0: all); errors as a send's (sending.SEND_ERRORS)."""
        client = self.client
        assert client is not None
        try:
            peer = await sending.resolve_recipient(client, chat)
            await client.send_read_acknowledge(peer, max_id=max_id or None, clear_mentions=False)
        except errors.CrmError:
            raise
        except BaseException as exc:
            raise await self._send_failed(exc) from None

    async def _send_failed(self, exc: BaseException) -> errors.CrmError:
        """What the account learns from a failed send, then the error the caller gets (sending.SEND_ERRORS)."""
        if isinstance(exc, tg_errors.FloodWaitError):
            self._flood_until = time.monotonic() + exc.seconds
        elif isinstance(exc, TERMINAL_SESSION_ERRORS):
            await self.terminate()
        elif isinstance(exc, CONNECTION_ERRORS):
            # The connection may have just died of a revoked session (another request, or the update loop, saw the
            # 401 first): give the supervisor a moment to say so rather than answer "try again".
            deadline = time.monotonic() + REVOKED_VERDICT_SECONDS
            while self.state != AccountState.LOGGED_OUT and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if self.state == AccountState.LOGGED_OUT:
                return errors.AccountNotAuthorizedError(sending.REVOKED_MESSAGE)
        return sending.send_error(exc)

    # --- supervision ------------------------------------------------------------------------------------------------

    async def supervise(self, client: TelegramClient | None = None) -> None:
        """Keep the account connected: connect, await a disconnect, reconnect with backoff; stop on a dead session."""
        context = self._context
        backoff = 1.0
        try:
            while not context.stopping():
                if client is None:
                    self.set_state(
                        AccountState.CONNECTING if self.state != AccountState.DISCONNECTED
                        else AccountState.DISCONNECTED
                    )
                    try:
                        async with context.connect_slot():
                            client = await self.connect_stored()
                    except SessionTerminated:
                        await self.terminate(from_supervisor=True)
                        return
                    except Exception as exc:
                        log.warning(
                            "account %s: connect failed (%s); retrying in %.0fs",
                            self.key.phone,
                            type(exc).__name__,
                            backoff,
                        )
                        self.set_state(AccountState.DISCONNECTED)
                        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                        backoff = min(backoff * 2, context.settings.reconnect_max_backoff_seconds)
                        continue
                self.client = client
                self.set_state(AccountState.CONNECTED)
                backoff = 1.0
                await self._run_client_started_hooks(client)
                try:
                    # Resolves on a disconnect; raises the error that caused it (e.g. a 401 from GetDifference).
                    await client.disconnected
                except TERMINAL_SESSION_ERRORS:
                    await self.terminate(from_supervisor=True)
                    return
                except Exception as exc:
                    log.info("account %s: disconnected by %s", self.key.phone, type(exc).__name__)
                if context.stopping():
                    return
                log.info("account %s: connection lost; reconnecting", self.key.phone)
                self.set_state(AccountState.DISCONNECTED)
                await quiet_disconnect(client)
                client = None
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, context.settings.reconnect_max_backoff_seconds)
        except asyncio.CancelledError:
            pass
        except Exception:
            # Never die silently: the lease loop restarts a supervisor that is no longer running.
            log.exception("account %s: supervisor failed", self.key.phone)
            self.set_state(AccountState.DISCONNECTED)

    async def connect_stored(self) -> TelegramClient:
        """A connected, authorized client from the stored session; SessionTerminated if the session is dead."""
        key = self.key
        if self.session is None:
            data = await self._context.table.load_session(key.project_id, key.phone)
            if data is None:
                raise SessionTerminated()
            self.session = StoreSession.from_bytes(data, self._persist)
        client = self._context.clients.build(self.session, key)
        try:
            await client.connect()
            me = await client.get_me()
        except TERMINAL_SESSION_ERRORS:
            await quiet_disconnect(client)
            raise SessionTerminated() from None
        except BaseException:
            await quiet_disconnect(client)
            raise
        if me is None:
            # get_me() swallows 401s: the key no longer belongs to a logged-in user.
            await quiet_disconnect(client)
            raise SessionTerminated()
        self.user_id = me.id
        self.username = me.username
        return client

    async def terminate(self, *, from_supervisor: bool = False) -> None:
        """The session is dead: mark it logged_out, drop it, disconnect, and never reconnect it."""
        if self.state == AccountState.LOGGED_OUT:
            return
        key = self.key
        log.warning("account %s of project %s: session ended by Telegram; marked logged_out", key.phone, key.project_id)
        self.set_state(AccountState.LOGGED_OUT)
        if self.session is not None:
            self.session.disable_persistence()
        await self._context.table.mark_logged_out(key.project_id, key.phone)
        await self.release_lease()
        if not from_supervisor and self._supervisor is not None:
            self._supervisor.cancel()
        self._supervisor = None
        client, self.client, self.session = self.client, None, None
        if client is not None:
            await quiet_disconnect(client)
        await self._tell_status("logged_out", "revoked")

    async def stop(self, state: AccountState, *, save: bool = True) -> None:
        """Disconnect without touching the stored status: shutdown, a new login, or a lost lease (save=False:
        the new owner's session must not be overwritten with ours)."""
        await self.drop_login()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if self.session is not None and not save:
            self.session.disable_persistence()
        if self.client is not None:
            await quiet_disconnect(self.client)
        if self.session is not None:
            await self.session.flush()  # the update state Telethon saved while disconnecting
            self.session.disable_persistence()
        self.client = None
        self.session = None
        if self.state != AccountState.LOGGED_OUT:
            self.set_state(state)

    async def _persist(self, data: bytes) -> None:
        key = self.key
        if not await self._context.table.save_session(key.project_id, key.phone, data, self._context.owner_id):
            log.warning("account %s: session not saved, this server no longer holds its lease", key.phone)

    async def _run_client_started_hooks(self, client: TelegramClient) -> None:
        for hook in list(self._context.on_client_started):
            try:
                await hook(self.key, client)
            except Exception:
                log.exception("on_client_started hook failed for account %s", self.key.phone)
