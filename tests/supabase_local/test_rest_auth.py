"""The REST gateway's token check and its memory of verified tokens: a remembered token keeps its expiry, and only
the exact token is remembered (another signature or other claims are verified afresh)."""

from __future__ import annotations

import time

import jwt
import pytest

from supabase_local.rest.auth import JwtVerifier
from supabase_local.rest.errors import RestError

SECRET = "a-test-secret-of-at-least-thirty-two-bytes"


def token(secret: str = SECRET, **claims: object) -> str:
    return jwt.encode({"role": "authenticated", "sub": "user-1", **claims}, secret, algorithm="HS256")


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    verifier = JwtVerifier(SECRET)
    expiring = token(exp=int(time.time()) + 1)
    assert verifier.verify(expiring).role == "authenticated"  # verified, now remembered
    time.sleep(max(0.0, jwt.decode(expiring, SECRET, algorithms=["HS256"])["exp"] - time.time()) + 0.05)
    with pytest.raises(RestError) as refused:
        verifier.verify(expiring)
    assert (refused.value.status, refused.value.code) == (401, "PGRST303")


def test_the_same_claims_with_another_signature_are_refused() -> None:
    verifier = JwtVerifier(SECRET)
    good = token()
    verifier.verify(good)
    header, payload, _ = good.split(".")
    forged = token(secret="another-secret-of-at-least-thirty-two-bytes")
    for candidate in (f"{header}.{payload}.{forged.split('.')[2]}", forged):
        with pytest.raises(RestError) as refused:
            verifier.verify(candidate)
        assert (refused.value.status, refused.value.code) == (401, "PGRST301")


def test_a_token_with_another_role_is_not_answered_from_memory() -> None:
    verifier = JwtVerifier(SECRET)
    assert verifier.verify(token()).role == "authenticated"
    assert verifier.verify(token(role="anon")).role == "anon"
    assert verifier.verify(token(role="service_role")).claims["role"] == "service_role"
    with pytest.raises(RestError):
        verifier.verify(token(role="postgres"))  # never one of the API roles, remembered or not
