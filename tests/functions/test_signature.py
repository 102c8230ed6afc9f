"""Standard Webhooks verification: what is accepted and what is refused."""

from __future__ import annotations

import base64
import time

import pytest

from functions._shared import signature
from functions._shared.errors import WebhookSignatureError

SECRET = "s3cret-value"
BODY = b'{"text": "hi"}'


def test_a_fresh_signature_over_the_exact_body_verifies() -> None:
    now = int(time.time())
    header = signature.sign(SECRET, "evt_1", now, BODY)
    signature.verify(SECRET, "evt_1", str(now), header, BODY)


def test_one_matching_signature_among_several_verifies() -> None:
    now = int(time.time())
    header = f"v1,{base64.b64encode(b'x' * 32).decode()} " + signature.sign(SECRET, "evt_1", now, BODY)
    signature.verify(SECRET, "evt_1", str(now), header, BODY)


@pytest.mark.parametrize("change", ["body", "id", "secret", "timestamp"])
def test_any_changed_part_fails(change: str) -> None:
    now = int(time.time())
    header = signature.sign(SECRET, "evt_1", now, BODY)
    body, message_id, secret, timestamp = BODY, "evt_1", SECRET, str(now)
    if change == "body":
        body = b'{"text": "hI"}'
    elif change == "id":
        message_id = "evt_2"
    elif change == "secret":
        secret = "other"
    else:
        timestamp = str(now + 1)
    with pytest.raises(WebhookSignatureError):
        signature.verify(secret, message_id, timestamp, header, body)


@pytest.mark.parametrize("skew", [-301, 301, 3600])
def test_a_timestamp_outside_five_minutes_fails(skew: int) -> None:
    sent_at = int(time.time()) + skew
    header = signature.sign(SECRET, "evt_1", sent_at, BODY)
    with pytest.raises(WebhookSignatureError, match="window"):
        signature.verify(SECRET, "evt_1", str(sent_at), header, BODY)


def test_a_timestamp_inside_the_window_verifies() -> None:
    sent_at = int(time.time()) - 290
    signature.verify(SECRET, "evt_1", str(sent_at), signature.sign(SECRET, "evt_1", sent_at, BODY), BODY)


@pytest.mark.parametrize("header", ["", "v2,abc", "v1,", "garbage", "v1,not base64!"])
def test_malformed_signature_headers_fail(header: str) -> None:
    with pytest.raises(WebhookSignatureError):
        signature.verify(SECRET, "evt_1", str(int(time.time())), header, BODY)


def test_missing_parts_fail() -> None:
    now = str(int(time.time()))
    with pytest.raises(WebhookSignatureError):
        signature.verify(SECRET, None, now, "v1,x", BODY)
    with pytest.raises(WebhookSignatureError):
        signature.verify(SECRET, "evt", "not-a-number", "v1,x", BODY)


def test_whsec_secrets_sign_with_their_decoded_key() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    whsec = "whsec_" + base64.b64encode(key).decode()
    assert signature.signing_key(whsec) == key
    assert signature.signing_key("plain") == b"plain"


def test_matches_crm_servers_signer() -> None:
    """Both sides of the wire compute the same signature (crm_server signs, the webhook verifies)."""
    from crm_server.webhooks.signature import signature as server_signature

    now = int(time.time())
    signature.verify(SECRET, "evt_9", str(now), server_signature(SECRET, "evt_9", now, BODY), BODY)


def test_matches_crm_servers_signer_for_a_whsec_secret() -> None:
    """A `whsec_` secret signs with its decoded key on both sides (crm_server used to sign with the raw string)."""
    from crm_server.webhooks.signature import signature as server_signature

    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    now = int(time.time())
    signature.verify(secret, "evt_9", str(now), server_signature(secret, "evt_9", now, BODY), BODY)
