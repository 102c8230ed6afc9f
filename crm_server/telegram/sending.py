"""Sending from a connected client: the recipient as Telegram knows it, the message or file, and what Telethon
raises mapped to the contract's errors as one table at the boundary (as httpx maps httpcore's exceptions).
"""

from __future__ import annotations

import datetime
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from telethon import TelegramClient, errors as tg_errors, functions, types, utils

from crm_server import errors
from crm_server.media.outgoing import OutgoingFile
from crm_server.telegram.recipients import Recipient
from crm_server.telegram.states import CONNECTION_ERRORS, TERMINAL_SESSION_ERRORS

log = logging.getLogger(__name__)

REVOKED_MESSAGE = "The Telegram session was revoked; log in again"

ErrorTable = tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any], errors.CrmError]], ...]

# What a send may raise → the contract's error; the first row that matches wins.
SEND_ERRORS: ErrorTable = (
    (tg_errors.FloodWaitError, lambda exc: errors.FloodWaitError(retry_after=exc.seconds)),
    (tg_errors.PeerFloodError, lambda _: errors.FloodWaitError(
        "Telegram limits this account from messaging new people (PEER_FLOOD)", retry_after=3600)),
    ((tg_errors.UserPrivacyRestrictedError, tg_errors.UserIsBlockedError),
     lambda _: errors.RecipientPrivacyError(field="to")),
    (tg_errors.ChatWriteForbiddenError,
     lambda _: errors.RecipientPrivacyError("This account may not write to that chat", field="to")),
    ((tg_errors.UsernameNotOccupiedError, tg_errors.UsernameInvalidError, tg_errors.PeerIdInvalidError,
      tg_errors.InputUserDeactivatedError, ValueError),
     lambda _: errors.RecipientNotFoundError(field="to")),
    ((tg_errors.MessageEmptyError, tg_errors.MessageTooLongError),
     lambda _: errors.ValidationError("Telegram refused this text", field="text")),
    (tg_errors.MediaCaptionTooLongError,
     lambda _: errors.ValidationError("The caption is too long for a file", field="text")),
    (TERMINAL_SESSION_ERRORS, lambda _: errors.AccountNotAuthorizedError(REVOKED_MESSAGE)),
    (tg_errors.RPCError, lambda exc: errors.TelegramError(f"Telegram error {exc.message}")),
    (CONNECTION_ERRORS, lambda _: errors.AccountDisconnectedError()),
)


def map_error(table: ErrorTable, exc: BaseException) -> errors.CrmError | None:
    for kinds, make in table:
        if isinstance(exc, kinds):
            return make(exc)
    return None


def send_error(exc: BaseException) -> errors.CrmError:
    """The contract's error for what a send raised; CancelledError and friends propagate."""
    mapped = map_error(SEND_ERRORS, exc)
    if mapped is not None:
        return mapped
    if isinstance(exc, Exception):
        log.exception("unexpected error while sending from an account")
        return errors.TelegramError("Unexpected error while sending")
    raise exc


@dataclass(frozen=True)
class SendResult:
    message_id: int
    chat_id: int
    to_user_id: int | None
    date: datetime.datetime


def upload_options(file: OutgoingFile) -> dict[str, Any]:
    """send_file's options that make Telegram show the file as its kind (Telethon guesses from the name otherwise)."""
    name = types.DocumentAttributeFilename(file.file_name)
    if file.kind == "photo":
        return {"force_document": False}
    if file.kind == "voice":
        # Plays as a voice message (with its waveform) rather than as a music file.
        return {"voice_note": True, "attributes": [types.DocumentAttributeAudio(duration=0, voice=True), name],
                "mime_type": file.mime_type or "audio/ogg"}
    if file.kind == "video":
        return {"supports_streaming": True, "mime_type": file.mime_type or "video/mp4",
                "attributes": [types.DocumentAttributeVideo(duration=0, w=1, h=1, supports_streaming=True), name]}
    if file.kind == "audio":
        title = file.file_name.rsplit(".", 1)[0] or None
        return {"mime_type": file.mime_type or "audio/mpeg",
                "attributes": [types.DocumentAttributeAudio(duration=0, title=title), name]}
    # A document keeps its name and is never turned into a photo or a player.
    return {"force_document": True, "attributes": [name], "mime_type": file.mime_type}


async def send_to(client: TelegramClient, recipient: Recipient, text: str | None, *, file: OutgoingFile | None,
                  reply_to: int | None) -> SendResult:
    """Resolve the recipient and send; raises what Telethon raises (see `send_error`) or RecipientNotFoundError."""
    peer = await resolve_recipient(client, recipient)
    if file is not None:
        message = await client.send_file(
            peer, str(file.path), caption=text or "", reply_to=reply_to, file_size=file.size, **upload_options(file),
        )
    else:
        message = await client.send_message(peer, text or "", reply_to=reply_to, link_preview=False)
    to_user_id = peer.user_id if isinstance(peer, types.InputPeerUser) else None
    date = message.date or datetime.datetime.now(datetime.timezone.utc)
    return SendResult(
        message_id=message.id,
        chat_id=utils.get_peer_id(message.peer_id) if message.peer_id else utils.get_peer_id(peer),
        to_user_id=to_user_id,
        date=date,
    )


async def resolve_recipient(client: TelegramClient, recipient: Recipient) -> Any:
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
