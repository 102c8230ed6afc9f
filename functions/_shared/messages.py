"""Writes of chat messages: the outgoing row after a send (one `store_telegram_send`, idempotent by the send's key,
retried, never skipped) and its claim first where the provider cannot dedupe, and the incoming message with the
organization's notification about it, through `ingest_telegram_webhook` (a batch of them through
`ingest_telegram_batch`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

from postgrest.types import ReturnMethod
from supabase import AsyncClient

from functions._shared.database import UNIQUE_VIOLATION, first_row, rows, rpc_value
from functions._shared.errors import (
    DatabaseError,
    IdempotencyInProgressError,
    IntegrationNotFoundError,
    MessageNotStoredError,
)
from functions._shared.event_rpc import INTEGRATION_GONE, event_rpc
from functions._shared.rows import ClientRow, IngestResult, IntegrationRow, SentMessage
from functions._shared.sending import SendRequest

log = logging.getLogger("functions.messages")

# An outgoing row claimed before a send through a provider that cannot dedupe retries (Wappi), until it answered.
SENDING = "sending"
# Pauses between attempts to store an outgoing row the provider already sent (seconds).
STORE_BACKOFF = (0.2, 0.5, 1.0, 2.0)


def _outgoing_row(organization_id: str, client: ClientRow, integration: IntegrationRow, request: SendRequest,
                  idempotency_key: str) -> dict[str, Any]:
    return {
        "organization_id": organization_id,
        "client_id": client.id,
        "integration_id": integration.id,
        "message_text": request.text,
        "message_type": "manager",
        "messenger_type": "telegram",
        "message_status": "sent",
        "is_outgoing": True,
        "is_read": True,
        "idempotency_key": idempotency_key,
        "file_url": request.fileUrl,
        "file_type": request.fileType,
        "file_name": request.fileName,
        "sender_name": request.senderName,
    }


class SendClaims:
    """`claim_send` / `release_claim` for one send request (functions._shared.sending.SendClaims)."""

    def __init__(self, db: AsyncClient, organization_id: str, client: ClientRow, request: SendRequest,
                 idempotency_key: str) -> None:
        self._db = db
        self._organization_id = organization_id
        self._client = client
        self._request = request
        self._idempotency_key = idempotency_key

    async def claim(self, integration: IntegrationRow) -> str:
        return await claim_send(self._db, organization_id=self._organization_id, client=self._client,
                                integration=integration, request=self._request, idempotency_key=self._idempotency_key)

    async def release(self, row_id: str) -> None:
        await release_claim(self._db, self._organization_id, row_id)


async def claim_send(db: AsyncClient, *, organization_id: str, client: ClientRow, integration: IntegrationRow,
                     request: SendRequest, idempotency_key: str) -> str:
    """Store the message as `sending` under its key before a provider that cannot dedupe sends it: a retry then
    finds it and never sends again, whatever happened after (no answer, or an answer we failed to store)."""
    row = {**_outgoing_row(organization_id, client, integration, request, idempotency_key),
           "message_status": SENDING, "metadata": {"provider": integration.provider, "integrationId": integration.id}}
    try:
        claimed = await first_row(db.table("chat_messages").insert(row), "claiming the send")
    except DatabaseError as exc:
        if exc.pg_code == UNIQUE_VIOLATION:
            raise IdempotencyInProgressError() from exc  # a concurrent request with this key holds it
        raise
    if claimed is None:
        raise DatabaseError("The database did not return the claimed message")
    return str(claimed["id"])


async def release_claim(db: AsyncClient, organization_id: str, row_id: str) -> None:
    """The provider refused the send: nothing went out, so the key may send again (here or elsewhere)."""
    await rows(db.table("chat_messages").delete(returning=ReturnMethod.minimal).eq("id", row_id)
               .eq("organization_id", organization_id).eq("message_status", SENDING), "releasing the claimed send")


async def store_outgoing(db: AsyncClient, *, organization_id: str, client: ClientRow, integration: IntegrationRow,
                         request: SendRequest, sent: SentMessage, idempotency_key: str, metadata: dict[str, Any],
                         sent_at: datetime, attempts: int) -> str:
    """Store the sent message and touch the client in one round trip (`store_telegram_send`), and return the row's
    id; retried, and a row already stored under the key is the answer.

    Raises MessageNotStoredError when every attempt failed: the caller must not be told "success" without a row.
    """
    params: dict[str, Any] = {
        "p_organization_id": organization_id, "p_client_id": client.id, "p_integration_id": integration.id,
        "p_idempotency_key": idempotency_key, "p_message_text": request.text, "p_file_url": request.fileUrl,
        "p_file_type": request.fileType, "p_file_name": request.fileName, "p_sender_name": request.senderName,
        "p_external_message_id": str(sent.message_id) if sent.message_id is not None else None,
        "p_metadata": metadata, "p_claimed_row_id": sent.claimed_row_id,
        # The Telegram ids the send resolved, kept only where the client has none yet (so their replies find it).
        "p_telegram_user_id": sent.to_user_id or None, "p_telegram_chat_id": sent.chat_id or None,
        "p_sent_at": sent_at.isoformat(),
        # The Telegram key its message.outgoing / edit / read events name it by (an event row stored first is
        # adopted by the rpc: one row, whichever arrived first).
        **{f"p_{name}": value for name, value in telegram_key(integration, client, sent).items()}}
    for attempt in range(attempts):
        try:
            value = await rpc_value(db.rpc("store_telegram_send", params), "storing the sent message")
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if isinstance(value, dict) and value.get("message_id"):
                return str(value["message_id"])
            log.warning("storing sent message %s: unexpected answer (attempt %d/%d)", sent.message_id,
                        attempt + 1, attempts)
        except DatabaseError as exc:
            log.warning("storing sent message %s failed (attempt %d/%d): %s", sent.message_id, attempt + 1,
                        attempts, exc.message)
        if attempt + 1 < attempts:
            await asyncio.sleep(STORE_BACKOFF[min(attempt, len(STORE_BACKOFF) - 1)])
    raise MessageNotStoredError()


def telegram_key(integration: IntegrationRow, client: ClientRow, sent: SentMessage) -> dict[str, str]:
    """The Telegram key (account, chat; the message id is external_message_id) of a message crm_server sent: the
    key its message.outgoing / edit / read events name it by. Wappi's ids are not Telegram's: no key."""
    if integration.provider != "telegram_crm" or sent.message_id is None:
        return {}
    account = integration.settings.get("crmPhoneNumber")
    chat = sent.chat_id or sent.to_user_id or client.telegram_chat_id or client.telegram_user_id
    if not account or not chat:
        return {}
    return {"external_account": str(account), "external_chat_id": str(chat)}


async def find_by_telegram_key(db: AsyncClient, *, organization_id: str, account_phone: str, chat_id: str,
                        external_message_id: str) -> IngestResult | None:
    """The message stored already under the Telegram key (organization, account, chat, Telegram message id, in
    either direction: the key the ingest rpcs dedupe by), as a duplicate's answer; None when it is new. Read before the
    work a redelivery must not repeat (fetching and uploading its file)."""
    row = await first_row(
        db.table("chat_messages").select("id, client_id").eq("organization_id", organization_id)
        .eq("external_account", account_phone).eq("external_chat_id", chat_id)
        .eq("external_message_id", external_message_id).limit(1),
        "looking up an earlier delivery")
    if row is None:
        return None
    return IngestResult(message_id=str(row["id"]), client_id=str(row["client_id"]), duplicate=True)


TelegramKey = tuple[str, str, str]  # (account phone, chat id, Telegram message id) within one organization


async def find_by_telegram_keys(db: AsyncClient, *, organization_id: str,
                                keys: Collection[TelegramKey]) -> dict[TelegramKey, IngestResult]:
    """find_by_telegram_key for many keys in one query (a batch's media events): the stored ones, as duplicates'
    answers. Filtered by account and message id in the database, by the exact (account, chat, id) here."""
    if not keys:
        return {}
    accounts = sorted({account for account, _, _ in keys})
    message_ids = sorted({message_id for _, _, message_id in keys})
    found = await rows(
        db.table("chat_messages").select("id, client_id, external_account, external_chat_id, external_message_id")
        .eq("organization_id", organization_id).in_("external_account", accounts)
        .in_("external_message_id", message_ids),
        "looking up earlier deliveries")
    wanted = set(keys)
    stored: dict[TelegramKey, IngestResult] = {}
    for row in found:
        key = (str(row["external_account"]), str(row["external_chat_id"]), str(row["external_message_id"]))
        if key in wanted:
            stored[key] = IngestResult(message_id=str(row["id"]), client_id=str(row["client_id"]), duplicate=True)
    return stored


async def ingest_batch(db: AsyncClient, *, organization_id: str, integration_id: str,
                       events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """One round trip (`ingest_telegram_batch`) for a batch's events, each `{i, kind, p_...}`; answers each event's
    result by its `i`. A disabled or deleted integration is IntegrationNotFoundError (404), as for one event."""
    try:
        value = await rpc_value(db.rpc("ingest_telegram_batch", {
            "p_organization_id": organization_id, "p_integration_id": integration_id, "p_events": events}),
            "storing the batch")
    except DatabaseError as exc:
        if exc.pg_code == INTEGRATION_GONE:
            raise IntegrationNotFoundError("Unknown or disabled webhook key") from exc
        raise
    if not isinstance(value, list) or not all(isinstance(item, dict) and isinstance(item.get("i"), int)
                                              for item in value):
        raise DatabaseError("The database answered ingest_telegram_batch unexpectedly")
    return {item["i"]: item for item in value}


async def ingest_incoming(db: AsyncClient, params: dict[str, Any]) -> IngestResult:
    """One round trip (`ingest_telegram_webhook`): check the integration is still enabled, find or create the
    client, store the message unless it is a redelivery, touch the client, and notify the organization of a new
    message (best effort, inside the database: a lost notification never loses the message).

    An integration disabled or deleted since the caller found it is IntegrationNotFoundError (404), exactly like an
    unknown webhook key.
    """
    value = await event_rpc(db, "ingest_telegram_webhook", params, "storing the incoming message")
    try:
        return IngestResult.model_validate(value)
    except ValueError as exc:
        raise DatabaseError("The database answered ingest_telegram_webhook unexpectedly") from exc
