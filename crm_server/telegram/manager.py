"""The adapter between crm_server and Telethon: `AccountManager` runs one TelegramClient per (project_id, phone).

It is the only module besides the sandbox that imports Telethon; it turns Telethon's errors into errors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from telethon import TelegramClient, errors as tg_errors, events, functions, types, utils

from crm_server import errors
from crm_server.webhooks.incoming import IncomingMessage
from crm_server.telegram.pacing import TokenBucket
from crm_server.telegram.recipients import Recipient
from crm_server.telegram.session import StoreSession
from crm_server.settings import ServerSettings
from crm_server.store import Store

log = logging.getLogger(__name__)

# Runtime states of an account in this process (the store only knows auth_required/authorized/logged_out).
AUTH_REQUIRED = "auth_required"
CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
LOGGED_OUT = "logged_out"
HELD_ELSEWHERE = "held_elsewhere"

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


# How long a send waits for an account that is (re)connecting before answering 503.
SEND_CONNECT_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class AccountKey:
    project_id: str
    phone: str


@dataclass(frozen=True)
class AccountStatus:
    project_id: str
    phone: str
    state: str
    authorized: bool
    connected: bool
    user_id: int | None
    username: str | None


@dataclass(frozen=True)
class SendResult:
    message_id: int
    chat_id: int
    to_user_id: int | None
    date: datetime.datetime


class SessionTerminated(Exception):
    """The account's session is dead (revoked, deactivated, duplicated): it must log in again."""


ClientStartedHook = Callable[[AccountKey, TelegramClient], Awaitable[None]]


class IncomingHandler(Protocol):
    """Receives every incoming private message, in order per account (crm_server.webhooks.listener.IncomingListener).

    Calling it may return before the message is stored; `when_stored` runs `record` once everything handed over
    so far is stored, which is when an update state covering those messages may be saved.
    """

    async def __call__(self, message: IncomingMessage) -> None: ...

    def when_stored(self, owner: object, record: Callable[[], None]) -> None: ...


# How long a send that lost its connection waits to learn whether the session was revoked (409, not 503).
REVOKED_VERDICT_SECONDS = 1.0

# Senders we have seen, so a known sender's names cost no request (UpdateShortMessage carries only the id).
SENDER_CACHE_SIZE = 50_000


@dataclass
class PendingLogin:
    """A login between send-code and authorization; the phone code hash never leaves this object."""

    client: TelegramClient
    session: StoreSession
    phone_code_hash: str
    expires_at: float
    password_required: bool = False


@dataclass
class AccountRuntime:
    """What this process knows and runs for one account."""

    key: AccountKey
    bucket: TokenBucket
    state: str = AUTH_REQUIRED
    user_id: int | None = None
    username: str | None = None
    client: TelegramClient | None = None
    session: StoreSession | None = None
    supervisor: asyncio.Task[None] | None = None
    login: PendingLogin | None = None
    flood_until: float = 0.0
    # When this process took the account's lease (monotonic), None when it holds none.
    lease_since: float | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set while the state is one a waiting send can act on (connected, or definitely not coming back).
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def set_state(self, state: str) -> None:
        self.state = state
        if state in (CONNECTED, LOGGED_OUT, HELD_ELSEWHERE):
            self.settled.set()
        else:
            self.settled.clear()

    @property
    def running(self) -> bool:
        """Holds (or is acquiring) the lease: a client is, or is about to be, live here."""
        return (self.supervisor is not None and not self.supervisor.done()) or self.login is not None


class AccountManager:
    def __init__(self, store: Store, settings: ServerSettings, *, owner_id: str | None = None) -> None:
        self._store = store
        self._settings = settings
        self.owner_id = owner_id or f"crm-{uuid.uuid4().hex[:16]}"
        self._runtimes: dict[AccountKey, AccountRuntime] = {}
        self._connect_gate = asyncio.Semaphore(settings.connect_concurrency)
        self._last_connect_started = 0.0
        self._stagger_lock = asyncio.Lock()
        self._lease_task: asyncio.Task[None] | None = None
        self._stopping = False
        # Hooks run for every new live client.
        self.on_client_started: list[ClientStartedHook] = []
        # Set by the app before start(): clients built afterwards forward incoming messages to it.
        self.incoming_handler: IncomingHandler | None = None
        self._senders: OrderedDict[tuple[AccountKey, int], Any] = OrderedDict()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Claim and connect every authorized account no other live server holds (in the background)."""
        self._lease_task = asyncio.create_task(self._lease_loop(), name="crm-lease-loop")

    async def stop(self) -> None:
        self._stopping = True
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        await asyncio.gather(*(self._stop_runtime(rt, HELD_ELSEWHERE) for rt in list(self._runtimes.values())))
        await self._store.accounts.release_all_leases(self.owner_id)

    def connected_count(self) -> int:
        return sum(1 for runtime in self._runtimes.values() if runtime.state == CONNECTED)

    # --- status ---------------------------------------------------------------------------------

    async def status(self, project_id: str | None, phone: str | None = None) -> list[AccountStatus]:
        now = time.time()
        statuses = []
        for record in await self._store.accounts.list(project_id, phone):
            runtime = self._runtimes.get(AccountKey(record.project_id, record.phone))
            if runtime is not None and runtime.state not in (AUTH_REQUIRED, HELD_ELSEWHERE):
                state = runtime.state
            elif record.status == "logged_out":
                state = LOGGED_OUT
            elif not record.authorized:
                state = AUTH_REQUIRED
            elif record.leased_by_other(self.owner_id, now):
                state = HELD_ELSEWHERE
            else:
                state = DISCONNECTED
            statuses.append(
                AccountStatus(
                    project_id=record.project_id,
                    phone=record.phone,
                    state=state,
                    authorized=record.authorized and state != LOGGED_OUT,
                    connected=state == CONNECTED,
                    user_id=record.user_id,
                    username=record.username,
                )
            )
        return statuses

    async def register(self, project_id: str, phone: str) -> AccountStatus:
        """Make sure the account exists (the connect route); start it here if it is authorized and free."""
        record = await self._store.accounts.ensure(project_id, phone)
        key = AccountKey(project_id, phone)
        if record.authorized and not self._runtime(key).running:
            await self._start_runtime(key)
        return (await self.status(project_id, phone))[0]

    # --- login ----------------------------------------------------------------------------------

    async def send_code(self, project_id: str, phone: str) -> int | None:
        """Start a login: Telegram sends the code. Returns the code's timeout in seconds, if Telegram gives one."""
        await self._store.accounts.ensure(project_id, phone)
        runtime = self._runtime(AccountKey(project_id, phone))
        async with runtime.lock:
            if runtime.state == CONNECTED:
                raise errors.ValidationError("This account is already logged in", field="phone")
            if not await self._acquire_lease(runtime):
                raise errors.AccountDisconnectedError("Another crm_server instance runs this account")
            # A fresh login replaces whatever ran before (a stale login, a dead or reconnecting client).
            await self._stop_runtime(runtime, AUTH_REQUIRED)
            session = StoreSession()
            dc = self._settings.telegram_dc_address()
            if dc is not None:
                session.set_dc(*dc)
            client = self._build_client(session, runtime.key)
            try:
                await client.connect()
                sent = await client.send_code_request(phone)
            except BaseException as exc:
                await self._quiet_disconnect(client)
                if isinstance(exc, tg_errors.RPCError):
                    raise self._login_error(exc) from None
                if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError)):
                    raise errors.AccountDisconnectedError("Cannot reach Telegram") from None
                raise
            runtime.login = PendingLogin(
                client=client,
                session=session,
                phone_code_hash=sent.phone_code_hash,
                expires_at=time.monotonic() + self._settings.login_ttl_seconds,
            )
            timeout = getattr(sent, "timeout", None)
            return int(timeout) if timeout is not None else None

    async def sign_in(self, project_id: str, phone: str, code: str) -> str:
        """Finish a login with the code: "authorized", or "password_required" when the account has 2FA."""
        runtime = self._runtime(AccountKey(project_id, phone))
        async with runtime.lock:
            login = self._live_login(runtime)
            try:
                user = await login.client.sign_in(phone=phone, code=code, phone_code_hash=login.phone_code_hash)
            except tg_errors.SessionPasswordNeededError:
                login.password_required = True
                return "password_required"
            except tg_errors.PhoneCodeExpiredError:
                await self._drop_login(runtime)
                raise errors.InvalidCodeError("The login code expired; request a new one", field="code") from None
            except tg_errors.RPCError as exc:
                raise self._login_error(exc) from None
            await self._complete_login(runtime, user)
            return "authorized"

    async def check_password(self, project_id: str, phone: str, password: str) -> str:
        runtime = self._runtime(AccountKey(project_id, phone))
        async with runtime.lock:
            login = self._live_login(runtime)
            if not login.password_required:
                raise errors.LoginNotStartedError("Sign in with the code before sending the 2FA password")
            try:
                user = await login.client.sign_in(password=password)
            except tg_errors.RPCError as exc:
                raise self._login_error(exc) from None
            await self._complete_login(runtime, user)
            return "authorized"

    async def logout(self, project_id: str, phone: str) -> None:
        """Log the account out of Telegram (best effort) and forget it: session, webhook, lease."""
        record = await self._store.accounts.get(project_id, phone)
        if record is None:
            raise errors.AccountNotFoundError()
        runtime = self._runtime(record_key := AccountKey(project_id, phone))
        async with runtime.lock:
            await self._drop_login(runtime)
            client = runtime.client
            if runtime.supervisor is not None:
                runtime.supervisor.cancel()
                runtime.supervisor = None
            if client is not None and client.is_connected():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.log_out(), timeout=10)
            if runtime.session is not None:
                runtime.session.disable_persistence()
            if client is not None:
                await self._quiet_disconnect(client)
            runtime.client = None
            runtime.session = None
            runtime.set_state(LOGGED_OUT)
            await self._store.webhooks.delete(project_id, phone)
            await self._store.accounts.delete(project_id, phone)
        self._runtimes.pop(record_key, None)

    # --- sending --------------------------------------------------------------------------------

    async def send(
        self,
        project_id: str,
        phone: str,
        recipient: Recipient,
        text: str | None,
        *,
        file_url: str | None = None,
        file_type: str | None = None,
        reply_to: int | None = None,
    ) -> SendResult:
        runtime = await self._live_runtime(project_id, phone)
        client = runtime.client
        assert client is not None

        remaining_flood = runtime.flood_until - time.monotonic()
        if remaining_flood > 0:
            raise errors.FloodWaitError(retry_after=remaining_flood)
        wait = runtime.bucket.take()
        if wait > 0:
            raise errors.RateLimitedError(retry_after=wait)

        try:
            peer = await self._resolve_recipient(client, recipient)
            if file_url:
                message = await client.send_file(
                    peer,
                    file_url,
                    caption=text or "",
                    reply_to=reply_to,
                    force_document=not (file_type or "").startswith("image"),
                )
            else:
                message = await client.send_message(peer, text or "", reply_to=reply_to, link_preview=False)
        except errors.CrmError:
            raise
        except BaseException as exc:
            raise await self._send_error(runtime, exc) from None
        to_user_id = peer.user_id if isinstance(peer, types.InputPeerUser) else None
        date = message.date or datetime.datetime.now(datetime.timezone.utc)
        return SendResult(
            message_id=message.id,
            chat_id=utils.get_peer_id(message.peer_id) if message.peer_id else utils.get_peer_id(peer),
            to_user_id=to_user_id,
            date=date,
        )

    async def _resolve_recipient(self, client: TelegramClient, recipient: Recipient) -> Any:
        """`@username` (ResolveUsername), numeric id (entity cache only), or `+phone` (ImportContacts)."""
        if recipient.kind == "id":
            try:
                return await client.get_input_entity(int(recipient.value))
            except ValueError:
                raise errors.RecipientNotFoundError(
                    "This account has not seen a user or chat with this id; use @username or +phone first",
                    field="to",
                ) from None
        if recipient.kind == "phone":
            digits = str(recipient.value)
            cached = client.session.get_entity_rows_by_phone(digits)
            if cached is not None:
                return await client.get_input_entity(cached[0])
            result = await client(
                functions.contacts.ImportContactsRequest(
                    [
                        types.InputPhoneContact(
                            client_id=random.getrandbits(62), phone=digits, first_name="+" + digits, last_name=""
                        )
                    ]
                )
            )
            imported_ids = {item.user_id for item in result.imported}
            for user in result.users:
                if user.id in imported_ids or (getattr(user, "phone", None) or "") == digits:
                    return utils.get_input_peer(user)
            raise errors.RecipientNotFoundError("No Telegram user has this phone number", field="to")
        try:
            return await client.get_input_entity(str(recipient.value))
        except (ValueError, tg_errors.UsernameNotOccupiedError, tg_errors.UsernameInvalidError):
            raise errors.RecipientNotFoundError("No Telegram user or chat has this username", field="to") from None

    async def _send_error(self, runtime: AccountRuntime, exc: BaseException) -> errors.CrmError:
        """Map what Telethon raised during a send to the contract's error (one place)."""
        if isinstance(exc, tg_errors.FloodWaitError):
            runtime.flood_until = time.monotonic() + exc.seconds
            return errors.FloodWaitError(retry_after=exc.seconds)
        if isinstance(exc, tg_errors.PeerFloodError):
            return errors.FloodWaitError(
                "Telegram limits this account from messaging new people (PEER_FLOOD)", retry_after=3600
            )
        if isinstance(exc, (tg_errors.UserPrivacyRestrictedError, tg_errors.UserIsBlockedError)):
            return errors.RecipientPrivacyError(field="to")
        if isinstance(exc, tg_errors.ChatWriteForbiddenError):
            return errors.RecipientPrivacyError("This account may not write to that chat", field="to")
        if isinstance(
            exc,
            (
                tg_errors.UsernameNotOccupiedError,
                tg_errors.UsernameInvalidError,
                tg_errors.PeerIdInvalidError,
                tg_errors.InputUserDeactivatedError,
                ValueError,
            ),
        ):
            return errors.RecipientNotFoundError(field="to")
        if isinstance(exc, (tg_errors.MessageEmptyError, tg_errors.MessageTooLongError)):
            return errors.ValidationError("Telegram refused this text", field="text")
        if isinstance(exc, tg_errors.MediaCaptionTooLongError):
            return errors.ValidationError("The caption is too long for a file", field="text")
        if isinstance(exc, TERMINAL_SESSION_ERRORS):
            await self._terminate(runtime)
            return errors.AccountNotAuthorizedError("The Telegram session was revoked; log in again")
        if isinstance(exc, tg_errors.RPCError):
            return errors.TelegramError(f"Telegram error {exc.message}")
        if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError)):
            # The connection may have just died of a revoked session (another request, or the update loop, saw the
            # 401 first): give the supervisor a moment to say so rather than answer "try again".
            deadline = time.monotonic() + REVOKED_VERDICT_SECONDS
            while runtime.state != LOGGED_OUT and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if runtime.state == LOGGED_OUT:
                return errors.AccountNotAuthorizedError("The Telegram session was revoked; log in again")
            return errors.AccountDisconnectedError()
        if isinstance(exc, Exception):
            log.exception("unexpected error while sending from an account")
            return errors.TelegramError("Unexpected error while sending")
        raise exc  # CancelledError and friends propagate

    def _login_error(self, exc: tg_errors.RPCError) -> errors.CrmError:
        if isinstance(exc, (tg_errors.PhoneCodeInvalidError, tg_errors.PhoneCodeEmptyError)):
            return errors.InvalidCodeError(field="code")
        if isinstance(exc, tg_errors.PasswordHashInvalidError):
            return errors.PasswordInvalidError(field="password")
        if isinstance(exc, (tg_errors.PhoneNumberInvalidError, tg_errors.PhoneNumberBannedError)):
            return errors.InvalidPhoneError(field="phone")
        if isinstance(exc, tg_errors.PhoneNumberUnoccupiedError):
            return errors.InvalidPhoneError("No Telegram account uses this phone number", field="phone")
        if isinstance(exc, tg_errors.FloodWaitError):
            return errors.FloodWaitError(retry_after=exc.seconds)
        return errors.TelegramError(f"Telegram error {exc.message}")

    # --- runtimes -------------------------------------------------------------------------------

    def _runtime(self, key: AccountKey) -> AccountRuntime:
        runtime = self._runtimes.get(key)
        if runtime is None:
            runtime = AccountRuntime(
                key=key,
                bucket=TokenBucket(self._settings.send_rate_per_minute / 60.0, self._settings.send_burst),
            )
            self._runtimes[key] = runtime
        return runtime

    async def _live_runtime(self, project_id: str, phone: str) -> AccountRuntime:
        """The connected runtime for a send, or the contract's error saying why there is none."""
        key = AccountKey(project_id, phone)
        runtime = self._runtimes.get(key)
        if runtime is not None and runtime.state == CONNECTED and runtime.client is not None:
            return runtime  # the hot path: no store round trip for a live account
        record = await self._store.accounts.get(project_id, phone)
        if record is None:
            raise errors.AccountNotFoundError()
        if not record.authorized:
            raise errors.AccountNotAuthorizedError()
        runtime = self._runtime(key)
        if runtime.state == LOGGED_OUT:
            raise errors.AccountNotAuthorizedError()
        if not runtime.running:
            if record.leased_by_other(self.owner_id, time.time()):
                raise errors.AccountDisconnectedError("Another crm_server instance runs this account")
            # Authorized elsewhere (e.g. `tgcrm login`) and not yet picked up by the lease loop: start now.
            await self._start_runtime(key)
        if runtime.state != CONNECTED:
            # Just started or reconnecting: give it a moment rather than failing a send at boot.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(runtime.settled.wait(), timeout=SEND_CONNECT_WAIT_SECONDS)
        if runtime.state == LOGGED_OUT:
            raise errors.AccountNotAuthorizedError()
        if runtime.state != CONNECTED or runtime.client is None:
            raise errors.AccountDisconnectedError()
        return runtime

    async def _start_runtime(self, key: AccountKey) -> bool:
        """Take the lease and start the supervisor that keeps the account connected. False if held elsewhere."""
        runtime = self._runtime(key)
        async with runtime.lock:
            if runtime.running or self._stopping:
                return runtime.running
            if not await self._acquire_lease(runtime):
                runtime.set_state(HELD_ELSEWHERE)
                return False
            runtime.set_state(CONNECTING)
            runtime.supervisor = asyncio.create_task(self._supervise(runtime), name=f"crm-account-{key.phone}")
            return True

    async def _supervise(self, runtime: AccountRuntime, client: TelegramClient | None = None) -> None:
        """Keep one account connected: connect, wait for a disconnect, reconnect with backoff; stop on a dead session."""
        backoff = 1.0
        try:
            while not self._stopping:
                if client is None:
                    runtime.set_state(CONNECTING if runtime.state != DISCONNECTED else DISCONNECTED)
                    try:
                        async with self._connect_slot():
                            client = await self._connect_stored(runtime)
                    except SessionTerminated:
                        await self._terminate(runtime, from_supervisor=True)
                        return
                    except Exception as exc:
                        log.warning(
                            "account %s: connect failed (%s); retrying in %.0fs",
                            runtime.key.phone,
                            type(exc).__name__,
                            backoff,
                        )
                        runtime.set_state(DISCONNECTED)
                        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                        backoff = min(backoff * 2, self._settings.reconnect_max_backoff_seconds)
                        continue
                runtime.client = client
                runtime.set_state(CONNECTED)
                backoff = 1.0
                await self._run_client_started_hooks(runtime.key, client)
                try:
                    # Resolves on a disconnect; raises the error that caused it (e.g. a 401 from GetDifference).
                    await client.disconnected
                except TERMINAL_SESSION_ERRORS:
                    await self._terminate(runtime, from_supervisor=True)
                    return
                except Exception as exc:
                    log.info("account %s: disconnected by %s", runtime.key.phone, type(exc).__name__)
                if self._stopping:
                    return
                log.info("account %s: connection lost; reconnecting", runtime.key.phone)
                runtime.set_state(DISCONNECTED)
                await self._quiet_disconnect(client)
                client = None
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self._settings.reconnect_max_backoff_seconds)
        except asyncio.CancelledError:
            pass
        except Exception:
            # Never die silently: the lease loop restarts a supervisor that is no longer running.
            log.exception("account %s: supervisor failed", runtime.key.phone)
            runtime.set_state(DISCONNECTED)

    async def _connect_stored(self, runtime: AccountRuntime) -> TelegramClient:
        """A connected, authorized client from the stored session; SessionTerminated if the session is dead."""
        key = runtime.key
        if runtime.session is None:
            data = await self._store.accounts.load_session(key.project_id, key.phone)
            if data is None:
                raise SessionTerminated()
            runtime.session = StoreSession.from_bytes(data, self._persist_for(key))
        client = self._build_client(runtime.session, key)
        try:
            await client.connect()
            me = await client.get_me()
        except TERMINAL_SESSION_ERRORS:
            await self._quiet_disconnect(client)
            raise SessionTerminated() from None
        except BaseException:
            await self._quiet_disconnect(client)
            raise
        if me is None:
            # get_me() swallows 401s: the key no longer belongs to a logged-in user.
            await self._quiet_disconnect(client)
            raise SessionTerminated()
        runtime.user_id = me.id
        runtime.username = me.username
        return client

    async def _complete_login(self, runtime: AccountRuntime, user: Any) -> None:
        login = runtime.login
        assert login is not None
        key = runtime.key
        runtime.login = None
        login.session.enable_persistence(self._persist_for(key))
        if self.incoming_handler is not None:
            # Wake the update loop so it records the state loaded at sign-in: a restart from then on catches up.
            await login.client.catch_up()
        await self._store.accounts.mark_authorized(key.project_id, key.phone, user.id, user.username)
        await login.session.flush()
        runtime.session = login.session
        runtime.user_id = user.id
        runtime.username = user.username
        runtime.flood_until = 0.0
        # Live at once: a send right after sign-in must not race the supervisor task's first step.
        runtime.client = login.client
        runtime.set_state(CONNECTED)
        runtime.supervisor = asyncio.create_task(
            self._supervise(runtime, login.client), name=f"crm-account-{key.phone}"
        )
        log.info("account %s of project %s logged in", key.phone, key.project_id)

    async def _terminate(self, runtime: AccountRuntime, *, from_supervisor: bool = False) -> None:
        """The session is dead: mark it logged_out, drop it, disconnect, and never reconnect it."""
        if runtime.state == LOGGED_OUT:
            return
        key = runtime.key
        log.warning("account %s of project %s: session ended by Telegram; marked logged_out", key.phone, key.project_id)
        runtime.set_state(LOGGED_OUT)
        if runtime.session is not None:
            runtime.session.disable_persistence()
        await self._store.accounts.mark_logged_out(key.project_id, key.phone)
        await self._store.accounts.release_lease(key.project_id, key.phone, self.owner_id)
        runtime.lease_since = None
        if not from_supervisor and runtime.supervisor is not None:
            runtime.supervisor.cancel()
        runtime.supervisor = None
        client, runtime.client, runtime.session = runtime.client, None, None
        if client is not None:
            await self._quiet_disconnect(client)

    async def _stop_runtime(self, runtime: AccountRuntime, state: str, *, save: bool = True) -> None:
        """Disconnect without touching the stored status: shutdown, a new login, or a lost lease (save=False:
        the new owner's session must not be overwritten with ours)."""
        await self._drop_login(runtime)
        supervisor, runtime.supervisor = runtime.supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if runtime.session is not None and not save:
            runtime.session.disable_persistence()
        if runtime.client is not None:
            await self._quiet_disconnect(runtime.client)
        if runtime.session is not None:
            await runtime.session.flush()  # the update state Telethon saved while disconnecting
            runtime.session.disable_persistence()
        runtime.client = None
        runtime.session = None
        if runtime.state != LOGGED_OUT:
            runtime.set_state(state)

    def _live_login(self, runtime: AccountRuntime) -> PendingLogin:
        login = runtime.login
        if login is None or login.expires_at < time.monotonic():
            raise errors.LoginNotStartedError()
        return login

    async def _drop_login(self, runtime: AccountRuntime) -> None:
        login, runtime.login = runtime.login, None
        if login is not None:
            await self._quiet_disconnect(login.client)

    # --- leases ---------------------------------------------------------------------------------

    async def _acquire_lease(self, runtime: AccountRuntime) -> bool:
        key = runtime.key
        acquired = await self._store.accounts.acquire_lease(
            key.project_id, key.phone, self.owner_id, self._settings.lease_ttl_seconds
        )
        if acquired and runtime.lease_since is None:
            runtime.lease_since = time.monotonic()
        return acquired

    async def _lease_loop(self) -> None:
        """Renew our leases, stop accounts whose lease we lost, and pick up accounts nobody runs."""
        interval = max(0.2, self._settings.lease_ttl_seconds / 3)
        while not self._stopping:
            try:
                await self._lease_round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease renewal failed (%s); retrying", type(exc).__name__)
            await asyncio.sleep(interval)

    async def _lease_round(self) -> None:
        round_started = time.monotonic()
        held = await self._store.accounts.renew_leases(self.owner_id, self._settings.lease_ttl_seconds)
        for key, runtime in list(self._runtimes.items()):
            if runtime.login is not None and runtime.login.expires_at < time.monotonic():
                async with runtime.lock:
                    await self._drop_login(runtime)
            # Leases taken while this round ran are not in `held` yet: judge only older ones, and leave
            # alone an account busy in a login, start or logout (it holds its lock).
            if runtime.lease_since is None or runtime.lease_since >= round_started or runtime.lock.locked():
                continue
            is_held = (key.project_id, key.phone) in held
            if runtime.running and not is_held:
                log.warning("account %s: lease lost to another server; disconnecting", key.phone)
                runtime.lease_since = None
                await self._stop_runtime(runtime, HELD_ELSEWHERE, save=False)
            elif is_held and not runtime.running:
                # Nothing runs here any more (abandoned login, stopped client): let another server have it.
                runtime.lease_since = None
                await self._store.accounts.release_lease(key.project_id, key.phone, self.owner_id)
        for record in await self._store.accounts.list_claimable(self.owner_id):
            key = AccountKey(record.project_id, record.phone)
            if not self._runtime(key).running:
                await self._start_runtime(key)

    # --- Telethon plumbing ----------------------------------------------------------------------

    def _build_client(self, session: StoreSession, key: AccountKey) -> TelegramClient:
        api_id, api_hash = self._settings.telegram_credentials()
        client = TelegramClient(
            session,
            api_id,
            api_hash,
            # A FloodWait must become our 429 with Retry-After, never a silent sleep inside a request.
            flood_sleep_threshold=0,
            # Load the stored update state so a restarted server fetches the updates it missed.
            catch_up=True,
            # Handlers run one after another in update order: the outbox gets a chat's messages in order,
            # and Telethon reads the next updates only after the previous ones were handled (see _listen).
            sequential_updates=True,
            device_model="tgcrm crm_server",
            system_version="1.0",
            app_version="0.1.0",
            base_logger="telethon",
        )
        if self.incoming_handler is not None:
            # Before connect(): catch-up starts as soon as the client connects.
            self._listen(client, session, key)
        return client

    def _listen(self, client: TelegramClient, session: StoreSession, key: AccountKey) -> None:
        """Forward incoming private messages, and keep only update states whose messages are already stored.

        Telethon saves its update state on its own schedule, possibly ahead of a message still being handled;
        a crash then would skip that message for good. So the session ignores those saves, and we record the
        state at the one moment it is known to be covered: when Telethon's update loop, having dispatched (and,
        with sequential_updates, awaited) everything it took so far, asks its queue for more; the handler then
        records it as soon as the messages it was handed up to that point are committed (it writes in batches).
        """
        session.gate_update_state()
        client.add_event_handler(functools.partial(self._forward_message, key), events.NewMessage())
        queue = client._updates_queue
        wait_for_updates = queue.get

        def get() -> Any:
            handler = self.incoming_handler
            if handler is not None and not client._message_box.is_empty():
                state, _channels = client._message_box.session_state()
                safe = types.updates.State(**state, unread_count=0)
                # Recorded once the messages handed over so far are committed: the handler buffers them.
                handler.when_stored(session, functools.partial(session.set_safe_update_state, safe))
            return wait_for_updates()

        queue.get = get  # type: ignore[method-assign]

    async def _forward_message(self, key: AccountKey, event: Any) -> None:
        message = event.message
        handler = self.incoming_handler
        if handler is None or message.out or not event.is_private or isinstance(message, types.MessageService):
            return  # our own messages, groups and channels are not forwarded
        sender = await self._sender_of(key, event)
        phone = getattr(sender, "phone", None)
        file_type, file_name = _media_descriptor(message)
        await handler(
            IncomingMessage(
                project_id=key.project_id,
                account_phone=key.phone,
                chat_id=event.chat_id,
                message_id=message.id,
                from_id=event.sender_id,
                from_username=getattr(sender, "username", None),
                from_first_name=getattr(sender, "first_name", None),
                from_last_name=getattr(sender, "last_name", None),
                from_phone=f"+{phone}" if phone else None,
                text=message.message or "",
                date=message.date,
                file_type=file_type,
                file_name=file_name,
            )
        )

    async def _sender_of(self, key: AccountKey, event: Any) -> Any:
        """The sender's User: from the update, from our cache, or (once per sender) asked from Telegram."""
        cache_key = (key, event.sender_id)
        sender = event.sender if isinstance(event.sender, types.User) else self._senders.get(cache_key)
        if sender is None:
            try:
                sender = await event.get_sender()
            except Exception as exc:  # forward the message without names rather than hold it up
                log.info("account %s: sender lookup failed (%s)", key.phone, type(exc).__name__)
                return None
        if isinstance(sender, types.User):
            self._senders[cache_key] = sender
            self._senders.move_to_end(cache_key)
            if len(self._senders) > SENDER_CACHE_SIZE:
                self._senders.popitem(last=False)
        return sender

    def _persist_for(self, key: AccountKey) -> Callable[[bytes], Awaitable[None]]:
        async def persist(data: bytes) -> None:
            if not await self._store.accounts.save_session(key.project_id, key.phone, data, self.owner_id):
                log.warning("account %s: session not saved, this server no longer holds its lease", key.phone)

        return persist

    @contextlib.asynccontextmanager
    async def _connect_slot(self) -> AsyncIterator[None]:
        """Bounded concurrency plus a minimum gap between connection starts, so a restart is not a burst."""
        async with self._connect_gate:
            async with self._stagger_lock:
                delay = self._last_connect_started + self._settings.connect_stagger_seconds - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._last_connect_started = time.monotonic()
            yield

    async def _run_client_started_hooks(self, key: AccountKey, client: TelegramClient) -> None:
        for hook in list(self.on_client_started):
            try:
                await hook(key, client)
            except Exception:
                log.exception("on_client_started hook failed for account %s", key.phone)

    @staticmethod
    async def _quiet_disconnect(client: TelegramClient) -> None:
        with contextlib.suppress(Exception):
            await client.disconnect()


def _media_descriptor(message: Any) -> tuple[str | None, str | None]:
    """(file_type, file_name) of a message's media, or (None, None) for plain text."""
    if message.media is None:
        return None, None
    for kind in ("photo", "voice", "video_note", "video", "audio", "sticker", "gif", "document", "contact", "geo"):
        if getattr(message, kind, None):
            file = message.file
            return kind, (file.name if file is not None else None)
    return type(message.media).__name__.removeprefix("MessageMedia").lower(), None
