"""The signature of a request one crm_server instance forwards to another: HMAC-SHA256 of the cluster secret over
method, path (with query), a hash of the body, a timestamp and a nonce; checked in constant time, within a window.

A valid signature is what lets an instance serve a request here without looking for the account's holder again
(one hop at most); the caller's `X-API-Key` travels with it and is checked by the owner as by any instance.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

TIMESTAMP_HEADER = "x-crm-cluster-timestamp"
NONCE_HEADER = "x-crm-cluster-nonce"
SIGNATURE_HEADER = "x-crm-cluster-signature"
FORWARDED_BY_HEADER = "x-crm-forwarded-by"
# Instances share a clock within NTP's error; a captured request is useless after this.
WINDOW_SECONDS = 30.0
# Nonces seen within the window, at most this many (a replay within the window is refused by its nonce).
SEEN_NONCES = 100_000


def _mac(secret: str, method: str, target: str, body: bytes, timestamp: str, nonce: str) -> str:
    message = b"\n".join([method.upper().encode(), target.encode(), hashlib.sha256(body).hexdigest().encode(),
                          timestamp.encode(), nonce.encode()])
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, method: str, target: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The headers that authenticate a forwarded request (`target`: path plus query string)."""
    timestamp = str(int(now if now is not None else time.time()))
    nonce = secrets.token_hex(16)
    return {TIMESTAMP_HEADER: timestamp, NONCE_HEADER: nonce,
            SIGNATURE_HEADER: "v1," + _mac(secret, method, target, body, timestamp, nonce)}


class SignatureVerifier:
    """Checks forwarded requests' signatures and remembers their nonces for the window."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> bool:
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not self._secret or not timestamp.isdigit() or not nonce or not signature.startswith("v1,"):
            return False
        now = self._clock()
        if abs(now - int(timestamp)) > WINDOW_SECONDS:
            return False
        expected = _mac(self._secret, method, target, body, timestamp, nonce)
        if not hmac.compare_digest(expected.encode(), signature[3:].encode()):
            return False
        self._forget_old(now)
        if nonce in self._seen:
            return False  # a replay of a request already served
        self._seen[nonce] = now
        return True

    def _forget_old(self, now: float) -> None:
        while self._seen and (len(self._seen) >= SEEN_NONCES
                              or next(iter(self._seen.values())) < now - 2 * WINDOW_SECONDS):
            self._seen.popitem(last=False)
