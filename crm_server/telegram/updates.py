"""Telethon's events → the Telethon-free events the webhook wing stores (`IncomingMessage`, webhooks.events).

Every event type crm_server forwards is translated here, with what translating needs: the sender cache, media
descriptors, and which chat (and whose send) a message id is. `UpdateListener.attach` also gates the session's
update state so it never runs ahead of the outbox.
"""

from __future__ import annotations

import datetime
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from telethon import TelegramClient, events, types

from crm_server.store.known_messages import KnownMessage, KnownMessagesTable
from crm_server.telegram import telethon_seam
from crm_server.telegram.service_notices import login_notice
from crm_server.telegram.session import StoreSession
from crm_server.telegram.states import AccountKey
from crm_server.webhooks.events import (
    DeletedMessages,
    EditedMessage,
    LoginAlert,
    MessagesRead,
    OutgoingMessage,
    WebhookEvent,
)
from crm_server.webhooks.incoming import IncomingMessage
from crm_server.webhooks.media_payload import MediaHint

log = logging.getLogger(__name__)

# Senders we have seen, so a known sender's names cost no request (UpdateShortMessage carries only the id).
SENDER_CACHE_SIZE = 50_000
# Messages with a file kept for their download (a Message holds its file reference): past it, or after a restart,
# the download fetches the message again (messages.GetMessages), which costs one request.
RECENT_MESSAGES = 2_000
# Telegram's service account: it sends the account's login codes and new-login alerts. Never a client: forwarded,
# every manager of the organization would read the next login code.
TELEGRAM_SERVICE_USER_ID = 777000
# Message id → chat of the messages forwarded lately, per account: a deletion right behind its message finds the
# chat before the outbox's group commit has written it to `known_messages`.
RECENT_CHATS = 10_000


class IncomingHandler(Protocol):
    """Receives every incoming private message, in order per account (crm_server.webhooks.listener.IncomingListener).

    Calling it may return before the message is stored; `when_stored` runs `record` once everything handed over
    so far is stored, which is when an update state covering those messages may be saved.
    """

    async def __call__(self, message: WebhookEvent) -> None: ...

    def when_stored(self, owner: object, record: Callable[[], None]) -> None: ...


class SenderCache:
    """The Users who wrote to each account, least recently seen dropped first."""

    def __init__(self, size: int = SENDER_CACHE_SIZE) -> None:
        self._size = size
        self._senders: OrderedDict[tuple[AccountKey, int], Any] = OrderedDict()

    async def sender_of(self, key: AccountKey, event: Any) -> Any:
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
            if len(self._senders) > self._size:
                self._senders.popitem(last=False)
        return sender


class RecentMessages:
    """The last incoming messages with a file, per (account, chat, message id), oldest dropped first."""

    def __init__(self, size: int = RECENT_MESSAGES) -> None:
        self._size = size
        self._messages: OrderedDict[tuple[AccountKey, int, int], Any] = OrderedDict()

    def remember(self, key: AccountKey, chat_id: int, message: Any) -> None:
        self._messages[(key, chat_id, message.id)] = message
        if len(self._messages) > self._size:
            self._messages.popitem(last=False)

    def get(self, key: AccountKey, chat_id: int, message_id: int) -> Any | None:
        return self._messages.get((key, chat_id, message_id))

    def forget(self, key: AccountKey, chat_id: int, message_id: int) -> None:
        self._messages.pop((key, chat_id, message_id), None)


# Telethon's classification of a file → the contract's kind; the first that matches wins (a voice note is also
# audio, a round video note and a GIF are also videos, a sticker is also a document).
FILE_KINDS = (("photo", "photo"), ("voice", "voice"), ("video_note", "video_note"), ("gif", "animation"),
              ("sticker", "sticker"), ("video", "video"), ("audio", "audio"), ("document", "document"))
# Extensions for a name when Telegram gives none (photos never have one).
DEFAULT_EXTENSIONS = {"photo": ".jpg", "voice": ".ogg", "video_note": ".mp4", "animation": ".mp4", "video": ".mp4"}


def media_hint(message: Any) -> MediaHint | None:
    """The file a message carries, as Telegram announces it, or None (no media, or media that is no file)."""
    if not isinstance(message.media, (types.MessageMediaPhoto, types.MessageMediaDocument)):
        # Not a file sent: no media, or a link preview (Telethon's `.photo` would show the preview's picture).
        return None
    for attribute, kind in FILE_KINDS:
        if getattr(message, attribute, None):
            file = message.file
            name = file.name if file is not None else None
            if not name:
                extension = (file.ext if file is not None else None) or DEFAULT_EXTENSIONS.get(kind, "")
                name = f"{kind}_{message.id}{extension}"
            return MediaHint(kind=kind, mime_type=file.mime_type if file is not None else None, file_name=name,
                             size=file.size if file is not None else None)
    return None


def media_descriptor(message: Any) -> tuple[str | None, str | None]:
    """(file_type, None) of media that is no file (contact, geo, poll…), as the original plan forwarded it."""
    if message.media is None:
        return None, None
    for kind in ("contact", "geo"):
        if getattr(message, kind, None):
            return kind, None
    return type(message.media).__name__.removeprefix("MessageMedia").lower(), None


class RecentChats:
    """The chat of each message forwarded lately, per (account, message id), oldest dropped first."""

    def __init__(self, size: int = RECENT_CHATS) -> None:
        self._size = size
        self._chats: OrderedDict[tuple[AccountKey, int], int] = OrderedDict()

    def remember(self, key: AccountKey, message_id: int, chat_id: int) -> None:
        self._chats[(key, message_id)] = chat_id
        if len(self._chats) > self._size:
            self._chats.popitem(last=False)

    def get(self, key: AccountKey, message_id: int) -> int | None:
        return self._chats.get((key, message_id))


def _utc(moment: datetime.datetime | None) -> datetime.datetime:
    if moment is None:
        return datetime.datetime.now(datetime.timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


class UpdateListener:
    """Forwards each account's private-chat events to `handler` (new messages both ways, edits, deletions, read
    receipts, login alerts), and keeps only covered update states."""

    def __init__(self, handler: IncomingHandler, senders: SenderCache | None = None,
                 recent: RecentMessages | None = None, known: KnownMessagesTable | None = None) -> None:
        self._handler = handler
        self._senders = senders or SenderCache()
        self._recent = recent or RecentMessages()
        # Without a store (unit tests of incoming only) every outgoing message counts as sent elsewhere.
        self._known = known
        self._chats = RecentChats()
        # Told when Telethon skipped a gap (updates.differenceTooLong): gap repair fetches it (history_jobs.py).
        self.on_gap: Callable[[AccountKey], None] | None = None

    def attach(self, client: TelegramClient, session: StoreSession, key: AccountKey) -> None:
        """Listen on `client` (before connect(): catch-up starts as soon as the client connects).

        Telethon saves its update state on its own schedule, possibly ahead of a message still being handled;
        a crash then would skip that message for good. So the session ignores those saves, and we record the
        state at the one moment it is known to be covered: when Telethon's update loop, having dispatched (and,
        with sequential_updates, awaited) everything it took so far, asks its queue for more; the handler then
        records it as soon as the messages it was handed up to that point are committed (it writes in batches).
        """
        session.gate_update_state()
        # One handler per Telethon event type; with sequential_updates they run one at a time in update order,
        # so a chat's message, its edit and its deletion reach the outbox in that order.
        client.add_event_handler(functools.partial(self._forward_message, key), events.NewMessage())
        client.add_event_handler(functools.partial(self._forward_edit, key), events.MessageEdited())
        client.add_event_handler(functools.partial(self._forward_deletion, key), events.MessageDeleted())
        client.add_event_handler(functools.partial(self._forward_read, key), events.MessageRead(inbox=False))
        client.add_event_handler(functools.partial(self._forward_read, key), events.MessageRead(inbox=True))

        def record_covered_state() -> None:
            state = telethon_seam.update_state(client)
            if state is not None:
                # Recorded once the messages handed over so far are committed: the handler buffers them.
                self._handler.when_stored(session, functools.partial(session.set_safe_update_state, state))

        telethon_seam.before_each_update_read(client, record_covered_state)

        def gap() -> None:
            log.info("account %s: Telegram's difference was too long; repairing the gap", key.phone)
            if self.on_gap is not None:
                self.on_gap(key)

        telethon_seam.on_difference_too_long(client, gap)

    async def _forward_message(self, key: AccountKey, event: Any) -> None:
        message = event.message
        if not event.is_private or isinstance(message, types.MessageService):
            return  # groups, channels and service actions (calls, screenshots) are not forwarded
        if event.chat_id == TELEGRAM_SERVICE_USER_ID:
            await self._forward_service_notice(key, message)
            return
        if message.out:
            await self._forward_outgoing(key, event)
            return
        sender = await self._senders.sender_of(key, event)
        phone = getattr(sender, "phone", None)
        media = media_hint(message)
        file_type, file_name = media_descriptor(message) if media is None else (None, None)
        if media is not None:
            self._recent.remember(key, event.chat_id, message)
        self._chats.remember(key, message.id, event.chat_id)
        await self._handler(
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
                media=media,
            )
        )

    async def _lookup(self, key: AccountKey, message_ids: list[int]) -> dict[int, KnownMessage]:
        if self._known is None:
            return {}
        return await self._known.lookup(key.project_id, key.phone, message_ids)

    async def _forward_outgoing(self, key: AccountKey, event: Any) -> None:
        """The account wrote from elsewhere: a `message.outgoing`, unless `/telegram/send` sent it (Telegram tells
        a client of its own sends again when it catches up after a restart)."""
        message = event.message
        known = (await self._lookup(key, [message.id])).get(message.id)
        if known is not None and known.sent:
            return
        media = media_hint(message)
        if media is not None:
            self._recent.remember(key, event.chat_id, message)
        self._chats.remember(key, message.id, event.chat_id)
        await self._handler(OutgoingMessage(project_id=key.project_id, account_phone=key.phone,
                                            chat_id=event.chat_id, message_id=message.id,
                                            text=message.message or "", date=_utc(message.date), media=media))

    async def _forward_service_notice(self, key: AccountKey, message: Any) -> None:
        # (Its text is never logged nor forwarded: it holds login codes.)
        notice = None if message.out else login_notice(message.message or "")
        if notice is None:
            log.info("account %s: a notification from Telegram was not forwarded", key.phone)
            return
        await self._handler(LoginAlert(project_id=key.project_id, account_phone=key.phone, notice_id=message.id,
                                       alert=notice.alert, device=notice.device, location=notice.location,
                                       date=_utc(message.date)))

    async def _forward_edit(self, key: AccountKey, event: Any) -> None:
        message = event.message
        if (not event.is_private or isinstance(message, types.MessageService)
                or event.chat_id == TELEGRAM_SERVICE_USER_ID):
            return
        if message.edit_date is None or getattr(message, "edit_hide", False):
            # Telegram also sends updateEditMessage when only a message's reactions or buttons change: no edit
            # date, or one it hides ("edited" is not shown). Nothing the client wrote changed.
            return
        media = media_hint(message)
        if media is not None:
            # The edit's own event downloads the file (a new one, when the edit replaced it).
            self._recent.remember(key, event.chat_id, message)
        await self._handler(EditedMessage(project_id=key.project_id, account_phone=key.phone,
                                          chat_id=event.chat_id, message_id=message.id, text=message.message or "",
                                          edit_date=_utc(message.edit_date),
                                          outgoing=bool(message.out), media=media))

    async def _forward_deletion(self, key: AccountKey, event: Any) -> None:
        """Telegram names no chat for private-chat deletions: one event per chat the ids were delivered in, and
        one with `chat_id` None for the ids crm_server never saw (channel deletions name their channel: skipped)."""
        if getattr(event.original_update, "channel_id", None) is not None:
            return
        ids = [int(i) for i in event.deleted_ids]
        if not ids:
            return  # an empty deletion only moves the pts (e.g. a read's answer)
        chats: dict[int | None, list[int]] = {}
        unknown = []
        for message_id in ids:
            chat_id = self._chats.get(key, message_id)
            if chat_id is None:
                unknown.append(message_id)
            else:
                chats.setdefault(chat_id, []).append(message_id)
        for message_id, known in (await self._lookup(key, unknown)).items():
            chats.setdefault(int(known.chat_id), []).append(message_id)
        resolved = {i for group in chats.values() for i in group}
        unresolved = [i for i in ids if i not in resolved]
        if unresolved:
            chats[None] = unresolved
        now = datetime.datetime.now(datetime.timezone.utc)
        for chat_id, message_ids in chats.items():
            if chat_id == TELEGRAM_SERVICE_USER_ID:
                continue
            await self._handler(DeletedMessages(project_id=key.project_id, account_phone=key.phone, chat_id=chat_id,
                                                message_ids=tuple(message_ids), date=now))

    async def _forward_read(self, key: AccountKey, event: Any) -> None:
        if not event.is_private or event.chat_id in (None, TELEGRAM_SERVICE_USER_ID) or not event.max_id:
            return  # groups, channels, and "contents read" (voice listened) which names no chat
        await self._handler(MessagesRead(project_id=key.project_id, account_phone=key.phone, chat_id=event.chat_id,
                                         max_id=int(event.max_id), direction="outbox" if event.outbox else "inbox",
                                         date=datetime.datetime.now(datetime.timezone.utc)))
