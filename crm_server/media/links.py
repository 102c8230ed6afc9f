"""`MediaLinks`: the signed, expiring capability URLs (`GET /media/{id}?expires=…&signature=…`) of prepared media.

Whoever holds the URL may fetch that one file until it expires, without an API key (the webhook receiver has none).
The signature is HMAC-SHA256 over the id and the expiry with a key of the server's own, checked in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

# Derived rather than the session key itself: a link's signature can then never help with anything the session
# key protects, and every instance sharing CRM_SESSION_KEY verifies the links of the others.
KEY_LABEL = b"tgcrm media links v1"


def link_key(session_key: bytes) -> bytes:
    return hmac.new(session_key, KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True)
class SignedLink:
    url: str
    expires_at: float


class MediaLinks:
    def __init__(self, key: bytes, base_url: str, ttl_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._base = base_url.rstrip("/")
        self._ttl = ttl_seconds
        self._clock = clock

    def _signature(self, media_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{media_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def link(self, media_id: str) -> SignedLink:
        """A URL for `media_id` valid for the TTL from now."""
        expires = int(self._clock() + self._ttl)
        signature = self._signature(media_id, expires)
        url = f"{self._base}/media/{quote(media_id, safe='')}?expires={expires}&signature={signature}"
        return SignedLink(url=url, expires_at=float(expires))

    def valid(self, media_id: str, expires: str, signature: str) -> bool:
        """Whether the link's signature is ours and it has not expired (a forged and an expired link look alike)."""
        if not expires.isdigit() or len(expires) > 12:
            return False
        expected = self._signature(media_id, int(expires))
        # Constant time: a byte-by-byte compare would let a caller find a valid signature one byte at a time.
        signed = hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
        return signed and int(expires) >= self._clock()
