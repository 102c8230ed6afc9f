"""telegram-crm-webhook: an incoming Telegram message, posted by crm_server (or a server of the original plan),
its file fetched into chat-media, stored as the client's message and announced to the organization in one database
call.

Answers 5xx only when the database, the file's fetch or its upload failed, so the sender retries exactly when
retrying can help.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timezone
from typing import Annotated
from uuid import UUID, uuid4

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared import signature
from functions._shared.errors import (
    IntegrationNotFoundError,
    ProjectMismatchError,
    WebhookSecretError,
    WebhookSignatureError,
)
from functions._shared.incoming_media import MediaLimits, store_incoming_file
from functions._shared.media import IncomingMedia
from functions._shared.messages import find_incoming, ingest_incoming
from functions._shared.parsing import RequestModel, parse_json_object, validate_model
from functions._shared.phones import normalize_phone, normalize_phone_or_none
from functions._shared.rows import IngestResult
from functions._shared.runtime import FunctionsRuntime, runtime_of

NOTIFICATION_PREVIEW_LENGTH = 200
MAX_WEBHOOK_KEY_LENGTH = 200


def _telegram_id(value: object) -> object:
    """Telegram ids arrive as JSON numbers or numeric strings; both become the decimal string."""
    if isinstance(value, bool):
        raise ValueError("must be a Telegram id (an integer)")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.strip().isascii():
        return str(int(value.strip()))
    raise ValueError("must be a Telegram id (an integer)")


def _optional_telegram_id(value: object) -> object:
    return None if value is None or value == "" else _telegram_id(value)


def _phone_text(value: object) -> object:
    # Some senders put phones as JSON numbers (digits without `+`).
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


TelegramId = Annotated[str, BeforeValidator(_telegram_id)]
OptionalTelegramId = Annotated[str | None, BeforeValidator(_optional_telegram_id)]


class WebhookPayload(RequestModel):
    """What crm_server posts, and the minimal payload of the original plan
    (`{project_id, account_phone, from_id, from_username, text}`): everything else is optional."""

    event_id: str | None = Field(None, max_length=200)
    project_id: UUID
    account_phone: str = Field(max_length=40)
    from_id: TelegramId
    from_username: str | None = Field(None, max_length=100)
    from_first_name: str | None = Field(None, max_length=500)
    from_last_name: str | None = Field(None, max_length=500)
    from_phone: str | None = Field(None, max_length=40)
    chat_id: OptionalTelegramId = None
    message_id: OptionalTelegramId = None
    text: str | None = None
    timestamp: datetime | None = None
    file_url: str | None = Field(None, max_length=2000)
    file_type: str | None = Field(None, max_length=100)
    file_name: str | None = Field(None, max_length=255)
    # crm_server's description of the message's file (the contract's "Media"); the legacy file_* fields beside it
    # are for receivers of the original plan, and are not what this function stores when `media` is present.
    media: IncomingMedia | None = None

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("account_phone", mode="before")
    @classmethod
    def _account_phone_text(cls, value: object) -> object:
        return _phone_text(value)

    @field_validator("account_phone")
    @classmethod
    def _account_phone(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("from_phone", mode="before")
    @classmethod
    def _from_phone(cls, value: object) -> object:
        # A sender's phone is a nice-to-have: an unreadable one is dropped rather than losing the message.
        value = _phone_text(value)
        return normalize_phone_or_none(value) if isinstance(value, str) else value

    @field_validator("from_username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        value = (value or "").strip().lstrip("@")
        return value or None

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # The contract's timestamps are UTC; a naive one is read as UTC rather than the server's local time.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value

    @model_validator(mode="after")
    def _has_content(self) -> WebhookPayload:
        # A photo without a caption has no text: its file is the content.
        if not (self.text or self.file_url or self.media):
            raise ValueError("text is required when the message has no media or file_url")
        return self

    @property
    def sender_display_name(self) -> str:
        full = " ".join(part for part in (self.from_first_name, self.from_last_name) if part).strip()
        if full:
            return full
        if self.from_username:
            return "@" + self.from_username
        return self.from_phone or f"Telegram {self.from_id}"

    def external_message_id(self, event_id: str | None) -> str | None:
        """The Telegram message id is the dedupe key (the event id when a sender gives only that); without either a
        redelivery cannot be recognised, and two identical texts are two messages."""
        return self.message_id or (f"event:{event_id}" if event_id else None)

    @property
    def telegram_chat_id(self) -> str:
        return self.chat_id or self.from_id

    def preview(self) -> str:
        if self.text:
            return self.text
        if self.media is not None:
            return self.media.preview()
        return self.file_name or "File"


class WebhookResponse(BaseModel):
    success: bool = True
    messageId: str
    clientId: str
    duplicate: bool


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    db = runtime.db

    # parse: who the webhook is for (the body is read before anything is trusted, but parsed only after)
    webhook_key = request.query_params.get("key", "")
    raw_body = await request.body()

    # authorize: the integration's key, then the signature (or, for a server of the original plan, its secret)
    integration = (await runtime.integrations.find_by_webhook_key(webhook_key)
                   if _could_be_a_webhook_key(webhook_key) else None)
    if integration is None or not integration.is_enabled:
        raise IntegrationNotFoundError("Unknown or disabled webhook key")
    secret = str(integration.settings.get("secret") or "")
    if not secret:
        raise WebhookSecretError()
    signed = signature.has_signature_headers(request.headers)
    if integration.settings.get("signatureRequired"):
        # The server said at connect that it signs every delivery (ours does, and never sends the secret itself):
        # an unsigned request is forged, whatever X-Lovable-Secret it carries.
        if not signed:
            raise WebhookSignatureError("This integration's server signs its deliveries: webhook-signature is required")
    else:
        # A server of the original plan: the secret header is its proof (and a signature too, when it sends one).
        given_secret = request.headers.get("x-lovable-secret", "")
        if not hmac.compare_digest(given_secret.encode(), secret.encode()):
            raise WebhookSecretError()
    webhook_id = request.headers.get("webhook-id") or ""
    if signed:
        signature.verify(secret, webhook_id, request.headers.get("webhook-timestamp"),
                         request.headers.get("webhook-signature"), raw_body,
                         tolerance_seconds=runtime.settings.webhook_tolerance_seconds)
        answered = runtime.replays.seen(integration.id, webhook_id)
        if answered is not None:
            # Stored already (a replay, or a redelivery within the window): the same answer, without the database.
            return JSONResponse({**answered, "duplicate": True})
    payload = validate_model(WebhookPayload, parse_json_object(raw_body))
    if str(payload.project_id) != integration.organization_id:
        raise ProjectMismatchError(field="project_id")

    event_id = payload.event_id or (request.headers.get("webhook-id") if signed else None)
    external_id = payload.external_message_id(event_id)

    # act: the message's file, from crm_server into chat-media; a redelivery of a stored message is answered before
    # the file is fetched again (the replay cache above knows only this process's recent answers)
    file_url, file_type, file_name = payload.file_url, payload.file_type, payload.file_name
    file_metadata: dict[str, object] = {}
    if payload.media is not None:
        earlier = (await find_incoming(db, organization_id=integration.organization_id,
                                       account_phone=payload.account_phone, chat_id=payload.telegram_chat_id,
                                       external_message_id=external_id)
                   if external_id is not None else None)
        if earlier is not None:
            return _answer(runtime, integration.id, webhook_id if signed else None, earlier)
        stored = await store_incoming_file(
            runtime.crm_http, runtime.media, payload.media, crm_api_url=integration.settings.get("crmApiUrl"),
            organization_id=integration.organization_id, integration_id=integration.id,
            chat_id=payload.telegram_chat_id, message_id=external_id or str(uuid4()),
            limits=MediaLimits(runtime.settings.media_max_bytes, runtime.settings.media_fetch_timeout_seconds),
            now=datetime.now(timezone.utc))
        # The legacy file_url beside `media` is crm_server's expiring capability: never what the row keeps.
        file_url, file_type, file_name = stored.file_url, stored.file_type, stored.file_name
        file_metadata = stored.metadata

    # store: one round trip checks the integration is still enabled, finds or creates the client, stores the message
    # unless it is a redelivery, and tells the organization about a new one
    metadata = {
        "source": "crm_server" if signed else "webhook",
        "event_id": event_id,
        "account_phone": payload.account_phone,
        "chat_id": payload.chat_id,
        "telegram_message_id": payload.message_id,
        **file_metadata,
    }
    result = await ingest_incoming(db, {
        "p_organization_id": integration.organization_id,
        "p_integration_id": integration.id,
        "p_telegram_user_id": payload.from_id,
        "p_message_text": payload.text or "",
        "p_notification_title": f"New Telegram message from {payload.sender_display_name}",
        "p_notification_body": payload.preview()[:NOTIFICATION_PREVIEW_LENGTH],
        "p_external_message_id": external_id,
        "p_telegram_chat_id": payload.telegram_chat_id,
        # With the chat and the message id, the account makes the redelivery key: another account's message 5
        # (a re-pointed integration, another organization) is another message.
        "p_account_phone": payload.account_phone,
        "p_telegram_username": payload.from_username,
        "p_first_name": payload.from_first_name,
        "p_last_name": payload.from_last_name,
        "p_phone": payload.from_phone,
        "p_sent_at": payload.timestamp.isoformat() if payload.timestamp else None,
        "p_file_url": file_url,
        "p_file_type": file_type,
        "p_file_name": file_name,
        "p_metadata": {name: value for name, value in metadata.items() if value is not None},
    })

    # respond
    return _answer(runtime, integration.id, webhook_id if signed else None, result)


def _answer(runtime: FunctionsRuntime, integration_id: str, webhook_id: str | None,
            result: IngestResult) -> JSONResponse:
    """The answer, remembered for a signed delivery so that its replay is answered without the database."""
    answer = WebhookResponse(messageId=result.message_id, clientId=result.client_id,
                             duplicate=result.duplicate).model_dump()
    if webhook_id is not None:
        runtime.replays.remember(integration_id, webhook_id, answer)
    return JSONResponse(answer)


def _could_be_a_webhook_key(value: str) -> bool:
    """Keys are printable ASCII; anything else (a NUL byte, which PostgreSQL refuses outright) is simply unknown,
    rather than a database error the sender would retry."""
    return 0 < len(value) <= MAX_WEBHOOK_KEY_LENGTH and value.isascii() and value.isprintable()
