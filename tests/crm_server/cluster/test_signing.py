"""The signature of forwarded requests: made and checked with the cluster secret, bound to the request, in a window,
once."""

from __future__ import annotations

from crm_server.cluster.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WINDOW_SECONDS,
    SignatureVerifier,
    sign,
)

SECRET = "cluster-secret-for-tests-0123456789"
BODY = b'{"project_id": "p", "phone": "+1", "text": "hi"}'


def _verifier(now: float = 1_000_000.0) -> SignatureVerifier:
    return SignatureVerifier(SECRET, clock=lambda: now)


def test_a_signed_request_is_accepted_once() -> None:
    verifier = _verifier()
    headers = sign(SECRET, "POST", "/telegram/send", BODY, now=1_000_000.0)
    assert verifier.verify("POST", "/telegram/send", BODY, headers)
    assert not verifier.verify("POST", "/telegram/send", BODY, headers)  # the same nonce again: a replay


def test_another_secret_method_path_or_body_is_refused() -> None:
    headers = sign(SECRET, "POST", "/telegram/send", BODY, now=1_000_000.0)
    assert not _verifier().verify("POST", "/telegram/send", BODY + b" ", headers)
    assert not _verifier().verify("DELETE", "/telegram/send", BODY, headers)
    assert not _verifier().verify("POST", "/telegram/send?x=1", BODY, headers)
    forged = sign("another-secret-of-32-characters!", "POST", "/telegram/send", BODY, now=1_000_000.0)
    assert not _verifier().verify("POST", "/telegram/send", BODY, forged)


def test_an_old_or_future_timestamp_is_refused() -> None:
    old = sign(SECRET, "POST", "/telegram/send", BODY, now=1_000_000.0 - WINDOW_SECONDS - 1)
    future = sign(SECRET, "POST", "/telegram/send", BODY, now=1_000_000.0 + WINDOW_SECONDS + 1)
    assert not _verifier().verify("POST", "/telegram/send", BODY, old)
    assert not _verifier().verify("POST", "/telegram/send", BODY, future)


def test_missing_or_malformed_headers_and_an_empty_secret_are_refused() -> None:
    headers = sign(SECRET, "POST", "/telegram/send", BODY, now=1_000_000.0)
    for name in (TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER):
        assert not _verifier().verify("POST", "/telegram/send", BODY, {k: v for k, v in headers.items() if k != name})
    assert not _verifier().verify("POST", "/telegram/send", BODY, {**headers, SIGNATURE_HEADER: "v2,abc"})
    assert not SignatureVerifier("", clock=lambda: 1_000_000.0).verify("POST", "/telegram/send", BODY, headers)
