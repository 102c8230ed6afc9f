"""telegram-crm-webhook: the events of a Telegram account, posted by crm_server (or a server of the original plan):
an incoming message (its file fetched into chat-media, stored as the client's message and announced to the
organization in one database call), and the other types of the contract's "Conversation events", each stored by
its handler in functions._shared (event_types); or a batch of such events, stored in one database call
(event_batch) and answered per event.

Answers 5xx only when the database, the file's fetch or its upload failed, so the sender retries exactly when
retrying can help.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared import signature
from functions._shared.errors import (
    IntegrationNotFoundError,
    WebhookSecretError,
    WebhookSignatureError,
)
from functions._shared.event_batch import BatchEnvelope, handle_batch, is_batch, replayed_batch
from functions._shared.event_context import EventContext
from functions._shared.event_message import WebhookPayload, WebhookResponse, handle_message
from functions._shared.event_types import EVENT_TYPES, MESSAGE, event_type_of
from functions._shared.parsing import parse_json_object, validate_model
from functions._shared.runtime import runtime_of

# The body and answer of a single event (the function's documented shape, functions/openapi.py).
__all__ = ["WebhookPayload", "WebhookResponse", "handler"]

MAX_WEBHOOK_KEY_LENGTH = 200


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)

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
            return JSONResponse(replayed_batch(answered) if "results" in answered else {**answered, "duplicate": True})
    data = parse_json_object(raw_body)

    if is_batch(data):
        # A batch (the contract's "Batched delivery"): one signature for all of it, then each event stored or refused
        # on its own. Its webhook-id is the batch's, never an event's: the events are keyed by their own ids.
        answer = await handle_batch(EventContext(runtime, integration, signed, None),
                                    validate_model(BatchEnvelope, data))
        if signed and not any(result.get("retry") for result in answer["results"]):
            # A batch with an event to retry is not remembered: its redelivery must reach the database.
            runtime.replays.remember(integration.id, webhook_id, answer)
        return JSONResponse(answer)

    context = EventContext(runtime, integration, signed, webhook_id if signed else None)

    # act and store: by the event's type (absent: a message, as every sender of the original plan posts)
    kind = event_type_of(data)
    if kind == MESSAGE:
        answer = await handle_message(context, validate_model(WebhookPayload, data))
    elif kind in EVENT_TYPES:
        event_type = EVENT_TYPES[kind]
        event = validate_model(event_type.model, data)
        context.check_project(event)
        answer = await event_type.handle(context, event)
    else:
        # A type newer than this receiver (crm_server added one, or a registration subscribed to more than we know):
        # 200, so the sender does not retry, dead-letter or pause the whole account's deliveries over an event we
        # cannot store anyway, which a 4xx would do to every later event of the chat.
        answer = {"success": True, "ignored": True, "type": kind}

    # respond: remembered for a signed delivery, so that its replay is answered without the database
    if signed:
        runtime.replays.remember(integration.id, webhook_id, answer)
    return JSONResponse(answer)


def _could_be_a_webhook_key(value: str) -> bool:
    """Keys are printable ASCII; anything else (a NUL byte, which PostgreSQL refuses outright) is simply unknown,
    rather than a database error the sender would retry."""
    return 0 < len(value) <= MAX_WEBHOOK_KEY_LENGTH and value.isascii() and value.isprintable()
