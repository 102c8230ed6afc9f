"""Standard Webhooks signing, the one implementation of its rules: crm_server signs its deliveries with it, and
telegram-crm-webhook (functions/_shared/signature.py) checks them with it.

The signed content is `<id>.<timestamp>.<body>`, HMAC-SHA256 over the exact bytes sent, `v1,<base64>`. The key of a
`whsec_<base64>` secret is its decoded bytes, as the spec says; any other secret (connect secrets predate the
prefix) is its UTF-8 bytes. Checked against the spec's test vector and the official `standardwebhooks` library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def signing_key(secret: str) -> bytes:
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode()


def signature(secret: str, event_id: str, timestamp: int | str, body: bytes) -> str:
    """The `webhook-signature` value of one message (`timestamp` exactly as its header carries it)."""
    content = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def delivery_headers(secret: str, event_id: str, timestamp: int, body: bytes, *,
                     with_secret: bool = True) -> dict[str, str]:
    """The headers of one delivery. `with_secret`: also send the secret itself as X-Lovable-Secret, for receivers
    of the original plan that check only that; anyone who sees one such delivery can forge the next, so a
    registration made by a receiver that verifies signatures turns it off."""
    headers = {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, event_id, timestamp, body),
    }
    if with_secret:
        headers["x-lovable-secret"] = secret
    return headers


def verify(secret: str, event_id: str, timestamp: int | str, body: bytes, header: str) -> bool:
    """True when any `v1,` signature of the space-separated header matches; every candidate is compared, each in
    constant time (rotation: a sender may send several)."""
    expected = signature(secret, event_id, timestamp, body).split(",", 1)[1].encode()
    matched = False
    for candidate in header.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and value:
            matched |= hmac.compare_digest(value.encode(), expected)
    return matched
