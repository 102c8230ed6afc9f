"""`TelegramMediaSource`: an incoming message's file through Telethon's own `download_media`, streamed to disk.

It implements crm_server.webhooks.media_source.MediaSource: the Message kept from its update is used when still at
hand, else fetched again (`get_messages`: after a restart, or when its file reference expired). Downloads are
bounded per account and overall; what Telethon raises becomes "wait and retry" or "deliver without it", as a table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from telethon import TelegramClient, errors as tg_errors

from crm_server.media.files import CountingFile, FileTooLarge
from crm_server.telegram.states import CONNECTION_ERRORS, TERMINAL_SESSION_ERRORS, AccountKey, SessionTerminated
from crm_server.telegram.updates import RecentMessages
from crm_server.webhooks.media_source import MediaRef, MediaTransient, MediaUnavailable

log = logging.getLogger(__name__)

# Telegram serves a file in 512 KB parts; a few downloads at once keep an account's connection busy without
# starving its sends and updates, and bound the disk writes of the whole server.
PER_ACCOUNT = 2
OVERALL = 8

# What a download may raise → what the lane does; the first row that matches wins.
DOWNLOAD_ERRORS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], type[Exception]], ...] = (
    (tg_errors.FloodWaitError, MediaTransient),
    ((tg_errors.FileMigrateError, tg_errors.ServerError, tg_errors.TimedOutError), MediaTransient),
    ((SessionTerminated, *TERMINAL_SESSION_ERRORS), MediaUnavailable),  # logged out: never fetchable again
    (tg_errors.RPCError, MediaUnavailable),  # Telegram refuses this file (deleted, invalid location…)
    (CONNECTION_ERRORS, MediaTransient),
)


def _mapped(exc: BaseException) -> Exception | None:
    for kinds, make in DOWNLOAD_ERRORS:
        if isinstance(exc, kinds):
            return make(type(exc).__name__)
    return None


class TelegramMediaSource:
    def __init__(self, recent: RecentMessages, *, per_account: int = PER_ACCOUNT, overall: int = OVERALL) -> None:
        self._clients: Callable[[str, str], TelegramClient | None] = lambda project_id, phone: None
        self._recent = recent
        self._per_account_limit = per_account
        self._per_account: dict[AccountKey, asyncio.Semaphore] = {}
        self._overall = asyncio.Semaphore(overall)

    def serve_from(self, clients: Callable[[str, str], TelegramClient | None]) -> None:
        """Download through these live clients (AccountManager.media_client; the manager is built after the
        delivery worker that asks us, since its listener feeds that worker)."""
        self._clients = clients

    async def download(self, ref: MediaRef, into: CountingFile) -> None:
        key = AccountKey(ref.project_id, ref.phone)
        slot = self._per_account.setdefault(key, asyncio.Semaphore(self._per_account_limit))
        async with self._overall, slot:
            try:
                await self._download(key, ref, into)
            except (FileTooLarge, MediaTransient, MediaUnavailable):
                raise
            except Exception as exc:
                mapped = _mapped(exc)
                if mapped is None:
                    raise
                log.info("account %s: media download failed (%s)", ref.phone, type(exc).__name__)
                raise mapped from None
        self._recent.forget(key, ref.chat_id, ref.message_id)

    async def _download(self, key: AccountKey, ref: MediaRef, into: CountingFile) -> None:
        client = self._clients(ref.project_id, ref.phone)
        if client is None or not client.is_connected():
            raise MediaTransient("the account is not connected")
        message = self._recent.get(key, ref.chat_id, ref.message_id)
        if message is None:
            message = await self._fetch(client, ref)
        try:
            await client.download_media(message, file=into)
        except tg_errors.FileReferenceExpiredError:
            # The reference in the Message we kept is stale: a fresh copy of the message carries a new one.
            into.restart()
            await client.download_media(await self._fetch(client, ref), file=into)

    @staticmethod
    async def _fetch(client: TelegramClient, ref: MediaRef) -> Any:
        message = await client.get_messages(ref.chat_id, ids=ref.message_id)
        if message is None or message.media is None:
            raise MediaUnavailable("the message or its file is gone")
        return message
