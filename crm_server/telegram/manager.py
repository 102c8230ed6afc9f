"""`AccountManager`: the registry of this process's accounts, the operations the routes call, and the lease loop
that shares accounts between crm_server instances. Each account's behaviour lives on its `Account`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from telethon import TelegramClient

from crm_server import errors
from crm_server.idempotency import SendCompletion
from crm_server.media.outgoing import OutgoingFile
from crm_server.settings import ServerSettings
from crm_server.store import AccountRecord, Store, StoredStatus
from crm_server.store.accounts import PhoneHeldByAnotherProject
from crm_server.telegram import telethon_seam
from crm_server.telegram.account import Account, AccountContext, ClientStartedHook
from crm_server.telegram.clients import ClientFactory
from crm_server.telegram.history_jobs import HistoryJob, HistoryJobs
from crm_server.telegram.pacing import ConnectPacer
from crm_server.telegram.qr_login import QrLogins, QrView
from crm_server.telegram.recipients import Recipient
from crm_server.telegram.sending import SendResult
from crm_server.telegram.session import StoreSession
from crm_server.telegram.shares import fair_share
from crm_server.telegram.states import AccountKey, AccountState, AccountStatus, LoginOutcome, SessionTerminated
from crm_server.telegram.updates import IncomingHandler, RecentMessages, UpdateListener

log = logging.getLogger(__name__)

# How long a send waits for an account that is (re)connecting before answering 503.
SEND_CONNECT_WAIT_SECONDS = 5.0
# How often the lease loop looks for accounts nobody runs (a stopped instance's, a dead one's once expired) and
# for its fair share; renewals go at a third of the lease TTL. One cheap query a second is what makes a graceful
# hand-over take about a second instead of a renewal period.
CLAIM_INTERVAL_SECONDS = 1.0


class AccountManager:
    def __init__(self, store: Store, settings: ServerSettings, *, owner_id: str | None = None,
                 incoming: IncomingHandler | None = None, recent_messages: RecentMessages | None = None,
                 on_lease: Callable[[str], None] | None = None) -> None:
        self._store = store
        self._settings = settings
        self.owner_id = owner_id or store.instance_id or f"crm-{uuid.uuid4().hex[:16]}"
        # Told "taken", "lost" and "released" as leases come and go (metrics).
        self._on_lease = on_lease
        # Accounts handed to another instance (fair share), by when this one may take them again.
        self._handed_over: dict[AccountKey, float] = {}
        self._last_renewal: float | None = None
        # Live states waiting to be written for the other instances' /telegram/status (latest wins).
        self._state_writes: dict[AccountKey, AccountState] = {}
        self._state_writer: asyncio.Task[None] | None = None
        # Receives every incoming private message of every account (None: clients only send, as a CLI login does).
        self.incoming = incoming
        self._accounts: dict[AccountKey, Account] = {}
        self._lease_task: asyncio.Task[None] | None = None
        self._stopping = False
        # Hooks run for every new live client.
        self.on_client_started: list[ClientStartedHook] = []
        # Incoming messages with a file, kept so their download needs no re-fetch (crm_server.telegram.media_download).
        self.recent_messages = recent_messages or RecentMessages()
        # QR logins, by login_id: their account is known only once a phone scanned them.
        self.qr_logins = QrLogins(settings, self._adopt_qr_session)
        pacer = ConnectPacer(settings.connect_concurrency, settings.connect_stagger_seconds)
        updates = (UpdateListener(incoming, recent=self.recent_messages, known=store.known_messages)
                   if incoming is not None else None)
        # History imports and gap repair (None without a listener: nothing to hand their events to).
        self.history: HistoryJobs | None = None
        if incoming is not None and updates is not None:
            self.history = HistoryJobs(store.history_jobs, store.known_messages, incoming, settings,
                                       self._history_client, self.recent_messages)
            self.on_client_started.append(self.history.on_connected)
            updates.on_gap = self.history.gap
        self._context = AccountContext(
            table=store.accounts,
            owner_id=self.owner_id,
            settings=settings,
            clients=ClientFactory(settings, updates),
            connect_slot=pacer.slot,
            on_client_started=self.on_client_started,
            stopping=lambda: self._stopping,
            on_status=incoming,
            logins=store.pending_logins if incoming is not None else None,
            on_state=self._publish_state,
            on_lease=on_lease,
        )

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Claim and connect every authorized account no other live server holds (in the background)."""
        telethon_seam.check_telethon_shape()
        telethon_seam.keep_difference_updates()
        if self._store.instance_id is not None:
            await self._replace_predecessors()
        self._lease_task = asyncio.create_task(self._lease_loop(), name="crm-lease-loop")
        if self.history is not None:
            self.history.start(lambda: [key for key, account in self._accounts.items() if account.live])

    async def _replace_predecessors(self) -> None:
        """An instance registered at our own URL is an earlier process of this server that died (a crash, then a
        restart): its leases are ours to take now rather than after they expire."""
        url = self._settings.instance_url
        for gone in await self._store.instances.others_at(url, self.owner_id):
            log.info("instance %s at %s is gone (this one replaces it); its leases are released", gone, url)
            await self._store.accounts.release_all_leases(gone)
            await self._store.instances.remove(gone)
        await self._store.instances.heartbeat(self.owner_id, url)

    async def stop(self) -> None:
        self._stopping = True
        # First: the others leave this instance out of their share and take its accounts as they are released.
        with contextlib.suppress(Exception):
            await self._store.instances.mark_stopping(self.owner_id)
        if self.history is not None:
            await self.history.stop()  # running jobs stay `running` in the store: resumed at the next connect
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        await self.qr_logins.close_all()
        await asyncio.gather(*(account.stop(AccountState.HELD_ELSEWHERE) for account in list(self._accounts.values())))
        await self._store.accounts.release_all_leases(self.owner_id)
        if self._state_writer is not None:
            self._state_writer.cancel()
        with contextlib.suppress(Exception):
            await self._store.instances.remove(self.owner_id)

    def runs_here(self, project_id: str, phone: str) -> bool:
        """This instance runs the account (connected, connecting or in a login): its requests are served here."""
        account = self._accounts.get(AccountKey(project_id, phone))
        return account is not None and account.running

    def held_count(self) -> int:
        return sum(1 for account in self._accounts.values() if account.running)

    def _publish_state(self, key: AccountKey, state: AccountState) -> None:
        """Queue the account's new live state for the store (one writer task; a burst of changes writes the last)."""
        self._state_writes[key] = state
        if self._state_writer is None or self._state_writer.done():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to tell yet
                self._state_writer = asyncio.get_running_loop().create_task(self._write_states())

    async def _write_states(self) -> None:
        while self._state_writes:
            key, state = next(iter(self._state_writes.items()))
            del self._state_writes[key]
            try:
                await self._store.accounts.set_runtime_state(key.project_id, key.phone, self.owner_id, state.value)
            except Exception as exc:
                log.warning("account %s: live state not stored (%s)", key.phone, type(exc).__name__)

    def connected_count(self) -> int:
        return sum(1 for account in self._accounts.values() if account.state == AccountState.CONNECTED)

    # --- status ---------------------------------------------------------------------------------

    async def status(self, project_id: str | None, phone: str | None = None) -> list[AccountStatus]:
        now = time.time()
        statuses = []
        for record in await self._store.accounts.list(project_id, phone):
            account = self._accounts.get(AccountKey(record.project_id, record.phone))
            if account is not None and account.state not in (AccountState.AUTH_REQUIRED, AccountState.HELD_ELSEWHERE):
                state = account.state
            elif record.status == StoredStatus.LOGGED_OUT:
                state = AccountState.LOGGED_OUT
            elif not record.authorized:
                state = AccountState.AUTH_REQUIRED
            elif record.leased_by_other(self.owner_id, now):
                # The holder's live state, as it wrote it: every instance answers alike.
                state = _stored_state(record.runtime_state) or AccountState.HELD_ELSEWHERE
            else:
                state = AccountState.DISCONNECTED
            statuses.append(
                AccountStatus(
                    project_id=record.project_id,
                    phone=record.phone,
                    state=state,
                    authorized=record.authorized and state != AccountState.LOGGED_OUT,
                    connected=state == AccountState.CONNECTED,
                    user_id=record.user_id,
                    username=record.username,
                )
            )
        return statuses

    async def register(self, project_id: str, phone: str) -> AccountStatus:
        """Make sure the account exists (the connect route); start it here if it is authorized and free."""
        record = await self._ensure(project_id, phone)
        account = self._account(AccountKey(project_id, phone))
        if record.authorized and not account.running:
            await account.start()
        return (await self.status(project_id, phone))[0]

    # --- login ----------------------------------------------------------------------------------

    async def send_code(self, project_id: str, phone: str) -> int | None:
        """Start a login: Telegram sends the code. Returns the code's timeout in seconds, if Telegram gives one."""
        await self._ensure(project_id, phone)
        return await self._account(AccountKey(project_id, phone)).begin_login()

    async def sign_in(self, project_id: str, phone: str, code: str) -> LoginOutcome:
        """Finish a login with the code: authorized, or password_required when the account has 2FA."""
        return await self._account(AccountKey(project_id, phone)).sign_in(code)

    async def check_password(self, project_id: str, phone: str, password: str) -> LoginOutcome:
        return await self._account(AccountKey(project_id, phone)).check_password(password)

    async def start_qr_login(self, project_id: str, phone: str | None) -> QrView:
        """Start a QR login; with a phone, only that account may scan it (it must not be logged in here already)."""
        if phone is not None:
            await self._ensure(project_id, phone)
            account = self._accounts.get(AccountKey(project_id, phone))
            if account is not None and account.state == AccountState.CONNECTED:
                raise errors.ValidationError("This account is already logged in", field="phone")
        login = await self.qr_logins.start(project_id, phone)
        if self._store.instance_id is not None:
            # Polls and the 2FA step may reach another instance: the store says this one has the login.
            await self._store.qr_logins.record(login.login_id, self.owner_id,
                                               time.time() + self._settings.login_ttl_seconds)
        return login.view()

    def qr_login_status(self, project_id: str, login_id: str) -> QrView:
        return self.qr_logins.get(project_id, login_id).view()

    async def check_qr_password(self, project_id: str, login_id: str, password: str) -> LoginOutcome:
        await self.qr_logins.get(project_id, login_id).check_password(password)
        return LoginOutcome.AUTHORIZED

    async def _adopt_qr_session(self, project_id: str, phone: str, session: StoreSession, user: Any) -> None:
        await self._ensure(project_id, phone)
        await self._account(AccountKey(project_id, phone)).adopt_session(session, user)

    async def logout(self, project_id: str, phone: str) -> None:
        """Log the account out of Telegram (best effort) and forget it: session and lease (its webhook registration
        is the webhook wing's: the route removes it)."""
        record = await self._store.accounts.get(project_id, phone)
        if record is None:
            raise errors.AccountNotFoundError()
        key = AccountKey(project_id, phone)
        account = self._account(key)
        async with account.lock:
            await account.log_out()
            await self._store.accounts.delete(project_id, phone)
        self._accounts.pop(key, None)

    # --- sending --------------------------------------------------------------------------------

    async def send(
        self,
        project_id: str,
        phone: str,
        recipient: Recipient,
        text: str | None,
        *,
        file: OutgoingFile | None = None,
        reply_to: int | None = None,
        completing: SendCompletion | None = None,
    ) -> SendResult:
        """Send as the account. With `completing`, the request's Idempotency-Key is completed with its answer in the
        transaction that remembers the message as ours: one commit instead of two (`Store.record_send`)."""
        account = await self._live_account(project_id, phone)
        result = await account.send(recipient, text, file=file, reply_to=reply_to)
        # Before answering: Telegram may tell the client of this message again (a catch-up after a restart), and
        # it must then be recognised as ours, never forwarded as `message.outgoing`.
        await self._store.record_send(project_id, phone, result.message_id, result.chat_id,
                                      completing.complete(result) if completing is not None else None)
        return result

    async def mark_read(self, project_id: str, phone: str, chat: Recipient, max_id: int) -> None:
        """Mark the client's messages of `chat` read up to `max_id` (0: all), as the account."""
        account = await self._live_account(project_id, phone)
        await account.mark_read(chat, max_id)

    async def import_history(self, project_id: str, phone: str, per_chat: int,
                             since: datetime.datetime | None) -> HistoryJob:
        """Start importing the account's recent private conversations (the account must be connected here)."""
        if self.history is None:
            raise errors.AccountDisconnectedError("This crm_server forwards no events")
        await self._live_account(project_id, phone)
        return await self.history.begin(AccountKey(project_id, phone), per_chat, since)

    async def history_job(self, job_id: str) -> HistoryJob | None:
        return await self.history.get(job_id) if self.history is not None else None

    async def _history_client(self, key: AccountKey) -> TelegramClient:
        account = await self._live_account(key.project_id, key.phone)
        assert account.client is not None
        return account.client

    def media_client(self, project_id: str, phone: str) -> TelegramClient | None:
        """The live client an incoming message's file is downloaded through, None while it is not connected here.

        SessionTerminated when the account is logged out: its files can never be fetched (deliver without them)."""
        account = self._accounts.get(AccountKey(project_id, phone))
        if account is not None and account.state == AccountState.LOGGED_OUT:
            raise SessionTerminated(phone)
        return account.client if account is not None and account.live else None

    # --- the registry ---------------------------------------------------------------------------

    async def _ensure(self, project_id: str, phone: str) -> AccountRecord:
        try:
            return await self._store.accounts.ensure(project_id, phone)
        except PhoneHeldByAnotherProject:
            # Without this a project could connect (and, on the sandbox, log in to) another project's account and
            # read its chats.
            raise errors.AccountHeldByAnotherProjectError(field="phone") from None

    def _account(self, key: AccountKey) -> Account:
        account = self._accounts.get(key)
        if account is None:
            account = self._accounts[key] = Account(key, self._context)
        return account

    async def _live_account(self, project_id: str, phone: str) -> Account:
        """The connected account for a send, or the contract's error saying why there is none."""
        key = AccountKey(project_id, phone)
        account = self._accounts.get(key)
        if account is not None and account.live:
            return account  # the hot path: no store round trip for a live account
        record = await self._store.accounts.get(project_id, phone)
        if record is None:
            raise errors.AccountNotFoundError()
        if not record.authorized:
            raise errors.AccountNotAuthorizedError()
        account = self._account(key)
        if account.state == AccountState.LOGGED_OUT:
            raise errors.AccountNotAuthorizedError()
        if not account.running:
            if record.leased_by_other(self.owner_id, time.time()):
                raise errors.AccountDisconnectedError("Another crm_server instance runs this account")
            # Authorized elsewhere (e.g. `tgcrm login`) and not yet picked up by the lease loop: start now.
            await account.start()
        if account.state != AccountState.CONNECTED:
            # Just started or reconnecting: give it a moment rather than failing a send at boot.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(account.settled.wait(), timeout=SEND_CONNECT_WAIT_SECONDS)
        if account.state == AccountState.LOGGED_OUT:
            raise errors.AccountNotAuthorizedError()
        if not account.live:
            raise errors.AccountDisconnectedError()
        return account

    # --- leases ---------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Renew our leases, stop accounts whose lease we lost, and pick up accounts nobody runs."""
        interval = min(CLAIM_INTERVAL_SECONDS, max(0.2, self._settings.lease_ttl_seconds / 3))
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
        ttl = self._settings.lease_ttl_seconds
        if self._last_renewal is None or round_started - self._last_renewal >= ttl / 3:
            self._last_renewal = round_started
            await self._store.instances.heartbeat(self.owner_id, self._settings.instance_url)
            await self._renew(round_started)
        await self._balance()

    async def _renew(self, round_started: float) -> None:
        held = await self._store.accounts.renew_leases(self.owner_id, self._settings.lease_ttl_seconds)
        await self.qr_logins.drop_expired()
        for key, account in list(self._accounts.items()):
            await account.drop_expired_login()
            # Leases taken while this round ran are not in `held` yet: judge only older ones, and leave
            # alone an account busy in a login, start or logout (it holds its lock).
            if account.lease_since is None or account.lease_since >= round_started or account.lock.locked():
                continue
            is_held = (key.project_id, key.phone) in held
            if account.running and not is_held:
                log.warning("account %s: lease lost to another server; disconnecting", key.phone)
                account.lease_since = None
                if self._on_lease is not None:
                    self._on_lease("lost")
                await account.stop(AccountState.HELD_ELSEWHERE, save=False)
            elif is_held and not account.running:
                # Nothing runs here any more (abandoned login, stopped client): let another server have it.
                await account.release_lease()

    async def _balance(self) -> None:
        """Hold this instance's fair share of the authorized accounts: take unheld ones up to it, and above it hand
        one over (saved, then released) per round, so a joining instance gets its share without a stampede."""
        live = await self._store.instances.live(self._settings.lease_ttl_seconds)
        total = await self._store.accounts.count_authorized()
        share = fair_share(total, max(1, len(live)))
        now = time.monotonic()
        self._handed_over = {key: until for key, until in self._handed_over.items() if until > now}
        held = [account for account in self._accounts.values() if account.running and not account.logging_in]
        if len(held) > share:
            idle = [account for account in held if not account.lock.locked() and account.lease_since is not None]
            if idle:
                await self._hand_over(max(idle, key=lambda account: account.lease_since or 0.0))
            return
        room = share - len(held)
        for record in await self._store.accounts.list_claimable(self.owner_id):
            if room <= 0:
                break
            key = AccountKey(record.project_id, record.phone)
            account = self._account(key)
            if account.running or key in self._handed_over:
                continue
            if await account.start():
                room -= 1

    async def _hand_over(self, account: Account) -> None:
        """Give up an account gracefully: its session (update state included) saved, then its lease released; the
        instance below its share takes it at its next round and catches up from that state."""
        key = account.key
        log.info("account %s: handed over (this instance is above its share)", key.phone)
        self._handed_over[key] = time.monotonic() + self._settings.lease_ttl_seconds
        async with account.lock:
            await account.stop(AccountState.HELD_ELSEWHERE)
            await account.release_lease()
        if self._on_lease is not None:
            self._on_lease("released")


def _stored_state(value: str | None) -> AccountState | None:
    try:
        return AccountState(value) if value else None
    except ValueError:
        return None  # written by a newer server
