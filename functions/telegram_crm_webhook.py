"""telegram-crm-webhook: an incoming Telegram message, posted by crm_server (or a server of the original plan),
stored as the client's message and announced to the organization in one database call.

Answers 5xx only when the database failed, so the sender retries exactly when retrying can help.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared import signature
from functions._shared.errors import IntegrationNotFoundError, ProjectMismatchError, WebhookSecretError
from functions._shared.messages import ingest_incoming
from functions._shared.runtime import runtime_of
from functions._shared.types import WebhookPayload, WebhookResponse, parse_json_object, validate_model

NOTIFICATION_PREVIEW_LENGTH = 200
MAX_WEBHOOK_KEY_LENGTH = 200


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    db = runtime.db

    # parse: who the webhook is for (the body is read before anything is trusted, but parsed only after)
    webhook_key = request.query_params.get("key", "")
    raw_body = await request.body()

    # authorize: the integration's key, then its secret, then (when signed) the signature
    integration = (await runtime.integrations.find_by_webhook_key(webhook_key)
                   if _could_be_a_webhook_key(webhook_key) else None)
    if integration is None or not integration.is_enabled:
        raise IntegrationNotFoundError("Unknown or disabled webhook key")
    secret = str(integration.settings.get("secret") or "")
    given_secret = request.headers.get("x-lovable-secret", "")
    if not secret or not hmac.compare_digest(given_secret.encode(), secret.encode()):
        raise WebhookSecretError()
    signed = signature.has_signature_headers(request.headers)
    if signed:
        signature.verify(secret, request.headers.get("webhook-id"), request.headers.get("webhook-timestamp"),
                         request.headers.get("webhook-signature"), raw_body,
                         tolerance_seconds=runtime.settings.webhook_tolerance_seconds)
    payload = validate_model(WebhookPayload, parse_json_object(raw_body))
    if str(payload.project_id) != integration.organization_id:
        raise ProjectMismatchError(field="project_id")

    # store: one round trip checks the integration is still enabled, finds or creates the client, stores the message
    # unless it is a redelivery, and tells the organization about a new one
    event_id = payload.event_id or (request.headers.get("webhook-id") if signed else None)
    metadata = {
        "source": "crm_server" if signed else "webhook",
        "event_id": event_id,
        "account_phone": payload.account_phone,
        "chat_id": payload.chat_id,
        "telegram_message_id": payload.message_id,
    }
    preview = payload.text or payload.file_name or "File"
    result = await ingest_incoming(db, {
        "p_organization_id": integration.organization_id,
        "p_integration_id": integration.id,
        "p_telegram_user_id": payload.from_id,
        "p_message_text": payload.text or "",
        "p_notification_title": f"New Telegram message from {payload.sender_display_name}",
        "p_notification_body": preview[:NOTIFICATION_PREVIEW_LENGTH],
        # The Telegram message id is the dedupe key (the event id when a sender gives only that); without either a
        # redelivery cannot be recognised, and two identical texts are two messages.
        "p_external_message_id": payload.message_id or (f"event:{event_id}" if event_id else None),
        "p_telegram_chat_id": payload.chat_id or payload.from_id,
        "p_telegram_username": payload.from_username,
        "p_first_name": payload.from_first_name,
        "p_last_name": payload.from_last_name,
        "p_phone": payload.from_phone,
        "p_sent_at": payload.timestamp.isoformat() if payload.timestamp else None,
        "p_file_url": payload.file_url,
        "p_file_type": payload.file_type,
        "p_file_name": payload.file_name,
        "p_metadata": {name: value for name, value in metadata.items() if value is not None},
    })

    # respond
    return JSONResponse(WebhookResponse(messageId=result.message_id, clientId=result.client_id,
                                        duplicate=result.duplicate).model_dump())


def _could_be_a_webhook_key(value: str) -> bool:
    """Keys are printable ASCII; anything else (a NUL byte, which PostgreSQL refuses outright) is simply unknown,
    rather than a database error the sender would retry."""
    return 0 < len(value) <= MAX_WEBHOOK_KEY_LENGTH and value.isascii() and value.isprintable()
