"""Signed-URL tokens: a JWT with `url` and `exp` under the project secret, valid for one object until it expires."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from supabase_local.storage.errors import StorageError
from supabase_local.storage.signing import parse_expires_in, sign_object_url, verify_object_token

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def token_of(signed_path: str) -> str:
    return parse_qs(urlsplit(signed_path).query)["token"][0]


def test_token_carries_the_object_and_its_expiry_as_supabase_does() -> None:
    signed = sign_object_url(SECRET, "chat-media", "org/a b.jpg", 60, now=1_000_000)
    claims = jwt.decode(token_of(signed), SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert signed.startswith("/object/sign/chat-media/org/a%20b.jpg?token=")
    assert claims == {"url": "chat-media/org/a b.jpg", "iat": 1_000_000, "exp": 1_000_060}


def test_token_opens_only_its_own_object() -> None:
    token = token_of(sign_object_url(SECRET, "chat-media", "org/a.jpg", 60))
    verify_object_token(SECRET, token, "chat-media", "org/a.jpg")
    with pytest.raises(StorageError) as raised:
        verify_object_token(SECRET, token, "chat-media", "org/b.jpg")
    assert raised.value.error == "InvalidSignature"


def test_expired_and_forged_tokens_are_invalid_jwt() -> None:
    expired = token_of(sign_object_url(SECRET, "b", "a", 1, now=time.time() - 10))
    forged = token_of(sign_object_url("another-secret-that-is-long-enough-too", "b", "a", 60))
    for token in (expired, forged, "not.a.jwt"):
        with pytest.raises(StorageError) as raised:
            verify_object_token(SECRET, token, "b", "a")
        assert (raised.value.status, raised.value.error) == (400, "InvalidJWT")


@pytest.mark.parametrize("value", ["60", 60, " 60 "])
def test_expires_in_takes_numbers_and_digit_strings(value: object) -> None:
    assert parse_expires_in(value) == 60


@pytest.mark.parametrize("value", [None, "", "-1", 0, True, "1e3", 10**12])
def test_bad_expires_in_names_the_field(value: object) -> None:
    with pytest.raises(StorageError) as raised:
        parse_expires_in(value)
    assert "expiresIn" in raised.value.message
