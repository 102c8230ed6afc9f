"""Standard Webhooks signing of the deliveries crm_server posts: `webhook-id`, `-timestamp`, `-signature`.

The signed content is `<id>.<timestamp>.<body>`, HMAC-SHA256 keyed with the connect secret (as the contract says);
a receiver recomputes it over the exact bytes it received, so we sign the bytes we send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    content = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def delivery_headers(secret: str, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-lovable-secret": secret,
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, event_id, timestamp, body),
    }


def verify(secret: str, event_id: str, timestamp: int, body: bytes, header: str) -> bool:
    """True when any `v1,` signature in the space-separated header matches (constant-time compare)."""
    expected = signature(secret, event_id, timestamp, body)
    matched = False
    for candidate in header.split():
        matched |= hmac.compare_digest(candidate.encode(), expected.encode())
    return matched
