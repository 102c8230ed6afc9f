"""Standard Webhooks signing as the spec defines it: the spec's own test vector, `whsec_` keys, and a receiver that
uses the official `standardwebhooks` library accepting what crm_server sends."""

from __future__ import annotations

import base64
import time

from standardwebhooks import Webhook

from crm_server.webhooks.signature import delivery_headers, signature, signing_key, verify

# The example of the Standard Webhooks specification (and of its reference libraries' tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specifications_test_vector_signs_as_the_spec_says() -> None:
    assert signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    assert verify(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, SPEC_SIGNATURE)


def test_a_whsec_secret_is_its_base64_key_and_any_other_secret_its_utf8_bytes() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    assert signing_key("whsec_" + base64.b64encode(key).decode()) == key
    assert signing_key("a-connect-secret") == b"a-connect-secret"
    assert signing_key("whsec_not base64!") == b"whsec_not base64!"  # not a spec key: used as it is


def test_a_receiver_on_the_official_library_accepts_our_deliveries() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    body = '{"event_id":"evt_1","text":"Привет"}'.encode()
    headers = delivery_headers(secret, "evt_1", int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == {"event_id": "evt_1", "text": "Привет"}
