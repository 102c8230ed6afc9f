"""Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`.

Verification accepts any of several space-separated signatures (key rotation), within a time window, in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

from functions._shared.errors import WebhookSignatureError

DEFAULT_TOLERANCE_SECONDS = 300
# Standard Webhooks secrets may be written `whsec_<base64 key>`; any other secret is used as its UTF-8 bytes.
_SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    if secret.startswith(_SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(_SECRET_PREFIX):], validate=True)
        except ValueError:
            pass
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int | str, body: bytes) -> str:
    """The `webhook-signature` value for one message (what crm_server sends; tests use it too)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


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
    # Signed over the header exactly as sent.
    expected = sign(secret, message_id, timestamp, body)
    expected_bytes = expected.split(",", 1)[1].encode()
    matched = False
    for candidate in signature_header.split():
        version, _, value = candidate.partition(",")
        if version != "v1" or not value:
            continue
        # Compare every candidate (no early exit), each in constant time.
        matched |= hmac.compare_digest(value.encode(), expected_bytes)
    if not matched:
        raise WebhookSignatureError("webhook-signature does not match")
