"""Standard Webhooks verification of what telegram-crm-webhook receives: the headers come together, the timestamp is
within the window, and one `v1` signature matches. The signing rules are crm_server.webhooks.signature's: one
implementation for both ends of the wire (they had drifted apart on `whsec_` keys).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from crm_server.webhooks.signature import signature as sign
from crm_server.webhooks.signature import signing_key, verify as signature_matches
from functions._shared.errors import WebhookSignatureError

__all__ = ["DEFAULT_TOLERANCE_SECONDS", "has_signature_headers", "sign", "signing_key", "verify"]

DEFAULT_TOLERANCE_SECONDS = 300


def has_signature_headers(headers: Mapping[str, str]) -> bool:
    """True when any `webhook-*` header is present: then the request must be validly signed."""
    return any(headers.get(name) is not None for name in ("webhook-id", "webhook-timestamp", "webhook-signature"))


def verify(secret: str, message_id: str | None, timestamp: str | None, signature_header: str | None, body: bytes,
           *, tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> None:
    """Raise WebhookSignatureError unless one `v1` signature matches and the timestamp is within the window."""
    if not message_id or not timestamp or not signature_header:
        raise WebhookSignatureError("webhook-id, webhook-timestamp and webhook-signature must come together")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookSignatureError("webhook-timestamp must be unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_seconds:
        raise WebhookSignatureError("webhook-timestamp is outside the allowed window")
    # Signed over the header exactly as sent, with the rules crm_server signs by (one implementation).
    if not signature_matches(secret, message_id, timestamp, body, signature_header):
        raise WebhookSignatureError("webhook-signature does not match")
