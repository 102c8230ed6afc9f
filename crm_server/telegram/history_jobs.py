"""`HistoryJobs`: history imports (on demand, and once at an account's first connect), resumed after a restart,
and gap repair (after `updates.differenceTooLong`, and every CRM_RECONCILE_MINUTES) through the same path.

Both hand their events to the same handler as live updates (the webhook wing's listener), so the outbox's unique
key makes a live message and its fetched twin one row. A job's progress is saved only once what it handed over
is committed, so a restart re-fetches at most one chunk (dropped again by that key).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import TelegramClient

from crm_server import errors
from crm_server.settings import ServerSettings
from crm_server.store.history_jobs import DONE, FAILED, RUNNING, DialogProgress, HistoryJob, HistoryJobsTable
from crm_server.store.known_messages import KnownMessagesTable
from crm_server.telegram.history import PacedReader, message_event
from crm_server.telegram.states import AccountKey
from crm_server.telegram.updates import IncomingHandler, RecentMessages

log = logging.getLogger(__name__)

DEFAULT_PER_CHAT = 50
DEFAULT_DAYS = 30
# Messages handed over between two progress saves (each waits for the outbox commit).
CHUNK = 50
# Gap repair looks at this many of the most recent dialogs, and fetches at most this many messages per dialog.
RECONCILE_DIALOGS = 100
RECONCILE_PER_CHAT = 1000

ClientOf = Callable[[AccountKey], Awaitable[TelegramClient]]


class HistoryJobs:
    def __init__(self, table: HistoryJobsTable, known: KnownMessagesTable, handler: IncomingHandler,
                 settings: ServerSettings, client_of: ClientOf, recent: RecentMessages | None = None) -> None:
        self._table = table
        self._known = known
        self._handler = handler
        self._settings = settings
        self._client_of = client_of
        self._recent = recent
        self._tasks: dict[str, asyncio.Task[None]] = {}  # job id or "reconcile:<phone>" → its task
        self._periodic: asyncio.Task[None] | None = None
        self._live: Callable[[], list[AccountKey]] = list
        # Telegram requests made by the last finished job or repair, for the figures of the closing note.
        self.last_requests: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self, live_accounts: Callable[[], list[AccountKey]]) -> None:
        self._live = live_accounts
        if self._settings.reconcile_minutes > 0:
            self._periodic = asyncio.create_task(self._reconcile_loop(), name="crm-reconcile")

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *([self._periodic] if self._periodic else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # --- imports --------------------------------------------------------------------------------

    async def begin(self, key: AccountKey, per_chat: int = DEFAULT_PER_CHAT,
                    since: datetime.datetime | None = None) -> HistoryJob:
        since = since or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=DEFAULT_DAYS)
        job = HistoryJob(job_id=f"hist_{uuid.uuid4().hex}", project_id=key.project_id, phone=key.phone,
                         per_chat=per_chat, since=since.timestamp())
        await self._table.create(job)
        self._spawn(job)
        return job

    async def get(self, job_id: str) -> HistoryJob | None:
        return await self._table.get(job_id)

    async def on_connected(self, key: AccountKey, client: TelegramClient) -> None:
        """A live client for the account: resume its unfinished jobs, or make its first import."""
        jobs = await self._table.of_account(key.project_id, key.phone)
        for job in jobs:
            if job.state == RUNNING and job.job_id not in self._tasks:
                self._spawn(job)
        if not jobs and self._settings.history_on_connect and not await self._known.last_ids(key.project_id,
                                                                                            key.phone):
            # First connected: nothing was ever imported nor delivered for it (an account that already forwarded
            # messages before imports existed is not backfilled behind the operator's back).
            await self.begin(key)

    def _spawn(self, job: HistoryJob) -> None:
        self._tasks[job.job_id] = asyncio.create_task(self._run(job), name=f"crm-history-{job.job_id}")

    async def _run(self, job: HistoryJob) -> None:
        key = AccountKey(job.project_id, job.phone)
        started = time.monotonic()
        reader: PacedReader | None = None
        try:
            client = await self._client_of(key)
            reader = PacedReader(client, self._settings.history_requests_per_second)
            since = datetime.datetime.fromtimestamp(job.since, datetime.timezone.utc)
            for dialog in await reader.private_dialogs():
                progress = job.progress.setdefault(dialog.id, DialogProgress())
                if progress.finished:
                    continue
                remaining = job.per_chat - progress.count
                # Only up to the chat's newest message when the dialogs were read: what came after is live (the
                # listener has it), and its history twin must not win the race to the outbox (a receiver stores a
                # `history` message without notifying).
                top_id = dialog.message.id if dialog.message is not None else 0
                messages = [] if remaining <= 0 or top_id <= progress.last_id else await reader.messages_after(
                    dialog.input_entity, min_id=progress.last_id, limit=remaining, since=since, top_id=top_id)
                for start in range(0, len(messages), CHUNK):
                    chunk = messages[start:start + CHUNK]
                    await self._hand_over(key, chunk, history=True)
                    progress.last_id, progress.count = chunk[-1].id, progress.count + len(chunk)
                    job.messages += len(chunk)
                    await self._table.save(job)
                progress.finished = True
                job.dialogs += 1
                await self._table.save(job)
            job.state = DONE
            await self._table.save(job)
            elapsed = time.monotonic() - started
            log.info("history import %s of account %s: %d dialogs, %d messages, %d requests in %.2fs",
                     job.job_id, key.phone, job.dialogs, job.messages, reader.requests, elapsed)
            self.last_requests = {"requests": reader.requests, "dialogs": job.dialogs, "messages": job.messages}
        except asyncio.CancelledError:
            raise  # shutdown: the job stays running in the store and resumes at the next connect
        except (ConnectionError, errors.AccountDisconnectedError) as exc:
            # The account lost Telegram (or moved to another instance): resumed at its next connect.
            log.info("history import %s of account %s paused (%s)", job.job_id, key.phone, type(exc).__name__)
        except Exception as exc:
            log.warning("history import %s of account %s failed (%s)", job.job_id, key.phone, type(exc).__name__)
            job.state, job.error = FAILED, type(exc).__name__
            await self._table.save(job)
        finally:
            self._tasks.pop(job.job_id, None)

    async def _hand_over(self, key: AccountKey, messages: list[Any], *, history: bool) -> None:
        """Each message as its webhook event (not the ones /telegram/send sent), then wait until committed."""
        sent = {i for i, known in (await self._known.lookup(key.project_id, key.phone,
                                                            [m.id for m in messages if m.out])).items()
                if known.sent}
        for message in messages:
            if message.id in sent:
                continue
            event = message_event(key, message, history=history, recent=self._recent)
            if event is not None:
                await self._handler(event)
        stored = asyncio.Event()
        loop = asyncio.get_running_loop()
        # A fresh owner: the listener keeps one pending record per owner and point.
        self._handler.when_stored(object(), lambda: loop.call_soon_threadsafe(stored.set))
        await stored.wait()

    # --- gap repair -----------------------------------------------------------------------------

    def gap(self, key: AccountKey) -> None:
        """Telethon skipped a gap (called inside its update loop): repair it in the background."""
        self._schedule_reconcile(key, before=time.time())

    def _schedule_reconcile(self, key: AccountKey, before: float | None) -> None:
        name = f"reconcile:{key.project_id}:{key.phone}"
        if name in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._reconcile_task(key, before), name=name)
        self._tasks[name] = task
        task.add_done_callback(lambda _: self._tasks.pop(name, None))

    async def _reconcile_task(self, key: AccountKey, before: float | None) -> None:
        try:
            await self.reconcile(key, before=before)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("gap repair of account %s failed (%s)", key.phone, type(exc).__name__)

    async def reconcile(self, key: AccountKey, *, before: float | None = None) -> int:
        """Fetch, per recent dialog, the messages after the last one delivered for it (known before `before`:
        what arrived live after a gap must not hide the gap); returns how many were handed over.

        They are sent as live messages (no `history`): they are ones the CRM missed, and should notify."""
        last = await self._known.last_ids(key.project_id, key.phone, before=before)
        if not last:
            return 0  # nothing delivered yet: nothing to repair (a history import is the way to fetch the past)
        floor = max(last.values())  # message ids of private chats are account-wide: a new chat starts above it
        client = await self._client_of(key)
        reader = PacedReader(client, self._settings.history_requests_per_second)
        handed = 0
        for dialog in await reader.private_dialogs(limit=RECONCILE_DIALOGS):
            after = last.get(dialog.id, floor)
            top = dialog.message.id if dialog.message is not None else 0
            if top <= after:
                continue
            messages = await reader.messages_after(dialog.input_entity, min_id=after, limit=RECONCILE_PER_CHAT)
            if messages:
                await self._hand_over(key, messages, history=False)
                handed += len(messages)
        log.info("gap repair of account %s: %d messages, %d requests", key.phone, handed, reader.requests)
        self.last_requests = {"requests": reader.requests, "messages": handed}
        return handed

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reconcile_minutes * 60)
            for key in self._live():
                self._schedule_reconcile(key, before=None)
