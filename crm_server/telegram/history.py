"""Reading an account's private dialogs and their messages through Telethon, paced, as the webhook events of
`message` / `message.outgoing` (history imports and gap repair share it; telegram/history_jobs.py drives them).

One GetDialogs per 100 dialogs and one GetHistory per 100 messages of a dialog, each behind the account's
history bucket; a FloodWait is slept out and the request repeated (an import has no caller waiting on it).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import TelegramClient, errors as tg_errors, types

from crm_server.telegram.pacing import TokenBucket
from crm_server.telegram.states import AccountKey
from crm_server.telegram.updates import TELEGRAM_SERVICE_USER_ID, RecentMessages, media_descriptor, media_hint
from crm_server.webhooks.events import OutgoingMessage, WebhookEvent
from crm_server.webhooks.incoming import IncomingMessage

log = logging.getLogger(__name__)

# Telegram answers at most this many messages (and dialogs) per request.
PAGE = 100
# A FloodWait longer than this fails the job rather than hold it for hours (the caller may start it again).
MAX_FLOOD_SLEEP_SECONDS = 600


class PacedReader:
    """One account's history requests, at most `rate_per_second` (a bucket of one: no bursts)."""

    def __init__(self, client: TelegramClient, rate_per_second: float,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._client = client
        self._bucket = TokenBucket(rate_per_second, 1)
        self._sleep = sleep
        self.requests = 0

    async def _turn(self) -> None:
        while (delay := self._bucket.take()) > 0:
            await self._sleep(delay)
        self.requests += 1

    async def _paced(self, make: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
        while True:
            await self._turn()
            try:
                return await make()
            except tg_errors.FloodWaitError as exc:
                if exc.seconds > MAX_FLOOD_SLEEP_SECONDS:
                    raise
                log.info("history read: FloodWait of %ss honoured", exc.seconds)
                await self._sleep(exc.seconds)

    async def private_dialogs(self, limit: int | None = None) -> list[Any]:
        """The account's dialogs with people (no bots, groups, channels, nor Telegram's service user), newest
        first (Telethon pages GetDialogs by 100; the pace is taken once per call)."""
        dialogs = await self._paced(lambda: self._client.get_dialogs(limit=limit))
        return [dialog for dialog in dialogs
                if isinstance(dialog.entity, types.User) and not dialog.entity.bot and not dialog.entity.is_self
                and dialog.entity.id != TELEGRAM_SERVICE_USER_ID]

    async def messages_after(self, entity: Any, *, min_id: int, limit: int, since: datetime.datetime | None = None,
                             top_id: int | None = None) -> list[Any]:
        """Up to `limit` of the newest messages above `min_id`, up to `top_id` and not before `since` (None:
        unbounded), oldest first."""
        newest_first: list[Any] = []
        offset_id = 0
        while len(newest_first) < limit:
            want = min(PAGE, limit - len(newest_first))
            page = await self._paced(lambda: self._client.get_messages(
                entity, limit=want, min_id=min_id, offset_id=offset_id))
            reached_since = False
            for message in page:
                if since is not None and message.date is not None and message.date < since:
                    reached_since = True
                    break
                if top_id is None or message.id <= top_id:
                    newest_first.append(message)
            if reached_since or len(page) < want:
                break
            offset_id = page[-1].id
        return list(reversed(newest_first[:limit]))


def message_event(key: AccountKey, message: Any, *, history: bool,
                  recent: RecentMessages | None = None) -> WebhookEvent | None:
    """The webhook event of a fetched private message, or None for what is never forwarded (service actions)."""
    if isinstance(message, types.MessageService) or not isinstance(message, types.Message):
        return None
    chat_id = message.chat_id
    media = media_hint(message)
    if media is not None and recent is not None:
        recent.remember(key, chat_id, message)  # its download then needs no re-fetch
    date = message.date or datetime.datetime.now(datetime.timezone.utc)
    if message.out:
        return OutgoingMessage(project_id=key.project_id, account_phone=key.phone, chat_id=chat_id,
                               message_id=message.id, text=message.message or "", date=date, media=media,
                               history=history)
    sender = message.sender if isinstance(message.sender, types.User) else None
    phone = getattr(sender, "phone", None)
    file_type, file_name = media_descriptor(message) if media is None else (None, None)
    return IncomingMessage(
        project_id=key.project_id, account_phone=key.phone, chat_id=chat_id, message_id=message.id,
        from_id=message.sender_id or chat_id, from_username=getattr(sender, "username", None),
        from_first_name=getattr(sender, "first_name", None), from_last_name=getattr(sender, "last_name", None),
        from_phone=f"+{phone}" if phone else None, text=message.message or "", date=date, file_type=file_type,
        file_name=file_name, media=media, history=history)

