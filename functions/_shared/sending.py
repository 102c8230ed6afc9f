"""Sending a manager's message through a provider: crm_server or Wappi.pro, each trying the client's addresses in
turn, and the one failover to another integration when the chosen one is down; and the answer to a replayed send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import BaseModel, Field, field_validator, model_validator
from starlette.responses import JSONResponse

from functions._shared.chat_media import BUCKET
from functions._shared.errors import Delivery, RecipientNotFoundError, UpstreamError
from functions._shared.parsing import MAX_TEXT_LENGTH, RequestModel
from functions._shared.recipients import recipient_candidates
from functions._shared.rows import ChatMessageRow, ClientRow, IntegrationRow, Provider, SentMessage
from functions._shared.runtime import FunctionsRuntime

log = logging.getLogger("functions.sending")

# The kinds of file crm_server sends (the contract's `file_type` of POST /telegram/send).
FileType = Literal["photo", "document", "voice", "video", "audio"]


# --- what the send functions (telegram-send, telegram-crm-send) take and answer ---------------------------------------

class SendRequest(RequestModel):
    """telegram-crm-send and telegram-send: what to send to which client."""

    clientId: UUID
    text: str | None = Field(None, max_length=MAX_TEXT_LENGTH)
    # An http(s) URL crm_server downloads, or a chat-media object of the caller's organization (a Storage URL of
    # this project, or a bare `chat-media/<path>`), which the handler turns into a signed URL (outgoing_files.py).
    fileUrl: str | None = Field(None, max_length=2000)
    fileName: str | None = Field(None, max_length=255)
    fileType: FileType | None = None
    integrationId: UUID | None = None
    senderName: str | None = Field(None, max_length=200)

    @field_validator("fileUrl")
    @classmethod
    def _file_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if value.strip().startswith(f"{BUCKET}/"):
            return value.strip()
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL or {BUCKET}/<path>")
        return value.strip()

    @field_validator("fileType", mode="before")
    @classmethod
    def _blank_file_type(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _something_to_send(self) -> SendRequest:
        if (self.text is None or not self.text.strip()) and self.fileUrl is None:
            raise ValueError("text or fileUrl is required")
        return self


class SendResponse(BaseModel):
    success: bool = True
    messageId: str | int | None
    savedMessageId: str
    integrationId: str
    provider: Provider
    failedOver: bool = False


# --- sending ----------------------------------------------------------------------------------------------------------

class SendClaims(Protocol):
    """The send's row claimed before a provider that cannot dedupe a retry sends (functions._shared.messages)."""

    async def claim(self, integration: IntegrationRow) -> str: ...

    async def release(self, row_id: str) -> None: ...


@dataclass(frozen=True)
class SendOutcome:
    """Which integration sent, what its provider answered, and, after a failover, from which one and why."""

    integration: IntegrationRow
    sent: SentMessage
    failover: dict[str, str] | None = None


async def send_with_failover(runtime: FunctionsRuntime, organization_id: str, chosen: IntegrationRow,
                             client: ClientRow, body: SendRequest, key: str, claims: SendClaims, *,
                             failover: Callable[[], IntegrationRow | None]) -> SendOutcome:
    """Send through `chosen`; when it refused before sending anything (unreachable, our key refused, the account
    missing, logged out or throttled) and `failover()` names another integration (the organization's next enabled
    one; None when the function does not fail over), once more through that one. Never after a timeout or a 5xx:
    the first one may have sent it."""
    try:
        return SendOutcome(chosen, await send_through(runtime, organization_id, chosen, client, body, key, claims))
    except UpstreamError as exc:
        backup = failover() if exc.delivery is Delivery.NOT_SENT_HERE else None
        if backup is None:
            raise
        log.warning("integration %s failed (%s); failing over to %s", chosen.id, exc.code, backup.id)
        sent = await send_through(runtime, organization_id, backup, client, body, key, claims)
        return SendOutcome(backup, sent, failover={"fromIntegrationId": chosen.id, "reason": exc.message})


async def send_through(runtime: FunctionsRuntime, organization_id: str, integration: IntegrationRow,
                       client: ClientRow, body: SendRequest, key: str, claims: SendClaims) -> SentMessage:
    if integration.provider == "telegram_crm":
        # crm_server dedupes by the Idempotency-Key itself: a retry of this key never sends twice there.
        return await send_with_telegram_crm(runtime, organization_id, integration, client, body, key)
    # Wappi cannot dedupe: the row is claimed under the key first, so a retry finds it instead of sending again.
    row_id = await claims.claim(integration)
    try:
        sent = await send_with_wappi(runtime, integration, client, body)
    except UpstreamError as exc:
        if exc.delivery is not Delivery.UNKNOWN:
            await claims.release(row_id)  # refused: nothing went out, the key may send again
        raise
    return sent.model_copy(update={"claimed_row_id": row_id})


async def send_with_telegram_crm(runtime: FunctionsRuntime, organization_id: str, integration: IntegrationRow,
                                 client: ClientRow, body: SendRequest, key: str) -> SentMessage:
    """Send through crm_server, addressing the client by chat id, user id, username, then phone, until Telegram
    finds them."""
    settings = integration.telegram_crm_settings()
    crm = runtime.crm(settings)
    not_found: RecipientNotFoundError | None = None
    for to in recipient_candidates(client, "telegram_crm"):
        try:
            # The same key for every attempt: crm_server forgets a key whose send failed, and remembers one that
            # succeeded, so a retry can never send twice.
            result = await crm.send(project_id=organization_id, phone=settings.crmPhoneNumber, to=to,
                                    text=body.text, file_url=body.fileUrl, file_name=body.fileName,
                                    file_type=body.fileType, idempotency_key=key)
        except RecipientNotFoundError as exc:
            not_found = exc
            continue
        return SentMessage(message_id=result.message_id,
                           chat_id=str(result.chat_id) if result.chat_id is not None else None,
                           to_user_id=str(result.to_user_id) if result.to_user_id is not None else None)
    assert not_found is not None
    raise not_found


async def send_with_wappi(runtime: FunctionsRuntime, integration: IntegrationRow, client: ClientRow,
                          body: SendRequest) -> SentMessage:
    """Send through Wappi.pro's sync API, trying the client's addresses in order until Telegram finds them."""
    settings = integration.wappi_settings()
    not_found: RecipientNotFoundError | None = None
    for recipient in recipient_candidates(client, "wappi"):
        try:
            if body.fileUrl:
                return await runtime.wappi.send_file_by_url(settings, recipient, body.fileUrl, caption=body.text,
                                                            file_name=body.fileName)
            return await runtime.wappi.send_text(settings, recipient, body.text or "")
        except RecipientNotFoundError as exc:
            not_found = exc
    assert not_found is not None
    raise not_found


def replayed_response(row: ChatMessageRow) -> JSONResponse:
    """The answer to a request whose Idempotency-Key already has a stored message: the first answer again."""
    # The provider's id as it first answered it (a number from crm_server, a string from Wappi).
    return JSONResponse(SendResponse(
        messageId=row.metadata.get("messageId", row.external_message_id), savedMessageId=row.id,
        integrationId=row.integration_id or "",
        provider=row.metadata.get("provider", "telegram_crm"),
        failedOver=bool(row.metadata.get("failover"))).model_dump())
