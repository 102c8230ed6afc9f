"""Writes of chat messages: the outgoing row after a send (idempotent by the send's key, retried, never skipped),
and the incoming message with the organization's notification about it, through `ingest_telegram_webhook`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from postgrest.types import ReturnMethod
from supabase import AsyncClient

from functions._shared.database import UNIQUE_VIOLATION, first_row, rows
from functions._shared.errors import (
    DatabaseError,
    IdempotencyInProgressError,
    IdempotencyKeyReusedError,
    MessageNotStoredError,
)
from functions._shared.event_rpc import event_rpc
from functions._shared.integrations import load_client
from functions._shared.rows import ChatMessageRow, ClientRow, IngestResult, IntegrationRow, SentMessage
from functions._shared.sending import SendRequest

log = logging.getLogger("functions.messages")

OUTGOING_COLUMNS = "id, client_id, integration_id, external_message_id, message_status, metadata"
# An outgoing row claimed before a send through a provider that cannot dedupe retries (Wappi), until it answered.
SENDING = "sending"
# Pauses between attempts to store an outgoing row the provider already sent (seconds).
STORE_BACKOFF = (0.2, 0.5, 1.0, 2.0)


async def find_outgoing(db: AsyncClient, organization_id: str, idempotency_key: str) -> dict[str, Any] | None:
    """The outgoing row stored earlier under this Idempotency-Key, if any."""
    return await first_row(
        db.table("chat_messages").select(OUTGOING_COLUMNS).eq("organization_id", organization_id)
        .eq("idempotency_key", idempotency_key).eq("is_outgoing", True).limit(1), "looking up an earlier send")


async def earlier_send(db: AsyncClient, organization_id: str, client_id: str,
                       idempotency_key: str) -> ChatMessageRow | None:
    """A replayed request: the row of the first send, or 422 when the key was used for another client."""
    row = await find_outgoing(db, organization_id, idempotency_key)
    if row is None:
        return None
    if str(row["client_id"]) != client_id:
        raise IdempotencyKeyReusedError(field="Idempotency-Key")
    return ChatMessageRow.model_validate(row)


async def client_and_earlier_send(db: AsyncClient, organization_id: str, client_id: str,
                                  idempotency_key: str) -> tuple[ClientRow, ChatMessageRow | None]:
    """The send's client and, for a replayed request, the first send's row: two independent reads, run at once (a
    round trip less per send). An unknown client is reported before a reused key, as if read one after the other."""
    client, earlier = await asyncio.gather(load_client(db, organization_id, client_id),
                                           earlier_send(db, organization_id, client_id, idempotency_key),
                                           return_exceptions=True)
    if isinstance(client, BaseException):
        raise client
    if isinstance(earlier, BaseException):
        raise earlier
    return client, earlier


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
                         attempts: int) -> str:
    """Store the sent message and return its row id; retried, and an existing row with the key is the answer.

    Raises MessageNotStoredError when every attempt failed: the caller must not be told "success" without a row.
    """
    row = {**_outgoing_row(organization_id, client, integration, request, idempotency_key),
           "external_message_id": str(sent.message_id) if sent.message_id is not None else None,
           "metadata": metadata, **telegram_key(integration, client, sent)}
    for attempt in range(attempts):
        try:
            if sent.claimed_row_id is not None:
                # The claim becomes the sent message (its integration too: a failover may have sent it).
                completed = await first_row(
                    db.table("chat_messages").update(row).eq("id", sent.claimed_row_id)
                    .eq("organization_id", organization_id), "completing the sent message")
                if completed is not None:
                    return str(completed["id"])
                raise DatabaseError("The claimed message disappeared before it was completed")
            stored = await first_row(db.table("chat_messages").insert(row), "storing the sent message")
            if stored is not None:
                return str(stored["id"])
            # Inserted without an answer (should not happen): the key finds it.
            existing = await find_outgoing(db, organization_id, idempotency_key)
            if existing is not None:
                return str(existing["id"])
        except DatabaseError as exc:
            if exc.pg_code == UNIQUE_VIOLATION:
                # A concurrent or earlier request with the same key stored it.
                try:
                    existing = await find_outgoing(db, organization_id, idempotency_key)
                except DatabaseError:
                    existing = None
                if existing is not None:
                    return str(existing["id"])
                # The account's message.outgoing event stored this very Telegram message first: it becomes the
                # send's row (one row, whichever of the two arrived first).
                adopted = await adopt_event_row(db, organization_id, row)
                if adopted is not None:
                    return adopted
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


async def adopt_event_row(db: AsyncClient, organization_id: str, row: dict[str, Any]) -> str | None:
    """The row an event stored under the send's Telegram key, completed with the send's key and metadata; None when
    no row holds the key (the conflict was something else)."""
    if not row.get("external_account"):
        return None
    existing = await first_row(
        db.table("chat_messages").select("id, metadata, idempotency_key").eq("organization_id", organization_id)
        .eq("external_account", row["external_account"]).eq("external_chat_id", row["external_chat_id"])
        .eq("external_message_id", row["external_message_id"]).eq("is_outgoing", True).limit(1),
        "finding the event's row of the sent message")
    if existing is None or existing.get("idempotency_key") not in (None, row["idempotency_key"]):
        return None
    # The send is what the row is now: not "from the Telegram app" (the event's source), the send's own metadata.
    earlier = {name: value for name, value in (existing.get("metadata") or {}).items() if name != "source"}
    changes = {"idempotency_key": row["idempotency_key"], "sender_name": row["sender_name"],
               "integration_id": row["integration_id"], "metadata": {**earlier, **row["metadata"]}}
    adopted = await first_row(db.table("chat_messages").update(changes).eq("id", existing["id"])
                              .eq("organization_id", organization_id), "adopting the event's row")
    return str(adopted["id"]) if adopted is not None else None


async def touch_client(db: AsyncClient, organization_id: str, client: ClientRow, sent: SentMessage,
                       at: datetime) -> None:
    """Move the client up the CRM's list and remember the Telegram ids the send resolved (so their replies find
    this client). Failures are logged: the message is stored already."""
    changes: dict[str, Any] = {"last_message_at": at.isoformat()}
    if client.telegram_user_id is None and sent.to_user_id:
        changes["telegram_user_id"] = sent.to_user_id
    if client.telegram_chat_id is None and sent.chat_id:
        changes["telegram_chat_id"] = sent.chat_id
    for attempt in (changes, {"last_message_at": changes["last_message_at"]}):
        try:
            await rows(db.table("clients").update(attempt, returning=ReturnMethod.minimal)
                       .eq("id", client.id).eq("organization_id", organization_id), "touching the client")
            return
        except DatabaseError as exc:
            # Another client may hold this Telegram user id already (unique per organization): just touch.
            log.warning("could not update client %s with %s: %s", client.id, sorted(attempt), exc.message)


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
