"""Token verification: HS256 with the project secret, asymmetric keys from the cached JWKS, and what is refused."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from functions._shared.auth import TokenVerifier
from functions._shared.errors import InvalidTokenError
from functions._shared.settings import FunctionsSettings

SECRET = "test-jwt-secret-with-enough-length-for-hs256"
JWKS_URL = "https://project.example/auth/v1/.well-known/jwks.json"


def settings(secret: str | None = SECRET) -> FunctionsSettings:
    return FunctionsSettings(supabase_url="https://project.example", supabase_service_role_key="service",
                             supabase_jwt_secret=secret)


def claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": str(uuid.uuid4()), "aud": "authenticated", "role": "authenticated", "iat": now,
            "exp": now + 600, **extra}


class JwksServer:
    """A JWKS endpoint behind httpx.MockTransport that counts how often it is fetched."""

    def __init__(self, *keys: tuple[str, object]) -> None:
        self.fetches = 0
        self.keys = list(keys)

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URL
        self.fetches += 1
        entries = []
        for kid, private_key in self.keys:
            entry = json.loads(jwt.algorithms.get_default_algorithms()[
                "RS256" if isinstance(private_key, rsa.RSAPrivateKey) else "ES256"].to_jwk(
                private_key.public_key()))  # type: ignore[attr-defined]
            entry["kid"] = kid
            entries.append(entry)
        return httpx.Response(200, json={"keys": entries})


async def test_hs256_token_signed_with_the_project_secret_verifies() -> None:
    async with httpx.AsyncClient() as http:
        verified = await TokenVerifier(settings(), http).verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert verified["aud"] == "authenticated"


@pytest.mark.parametrize("token_maker", [
    lambda: jwt.encode(claims(), "another-secret-another-secret-another", algorithm="HS256"),
    lambda: jwt.encode(claims(exp=int(time.time()) - 60), SECRET, algorithm="HS256"),
    lambda: jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"),
    lambda: jwt.encode(claims(), None, algorithm="none"),  # type: ignore[arg-type]
    lambda: "not.a.token",
    lambda: "",
])
async def test_bad_tokens_are_refused(token_maker) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as http:
        with pytest.raises(InvalidTokenError):
            await TokenVerifier(settings(), http).verify(token_maker())


async def test_asymmetric_tokens_verify_against_the_jwks_which_is_cached() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    server = JwksServer(("rsa-1", rsa_key), ("ec-1", ec_key))
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = TokenVerifier(settings(secret=None), http)
        for _ in range(3):
            await verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}))
            await verifier.verify(jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"}))
    assert server.fetches == 1


async def test_an_unknown_key_id_is_refused_without_refetching_on_every_token() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = JwksServer(("rsa-1", rsa_key))
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = TokenVerifier(settings(secret=None), http)
        await verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}))
        for _ in range(5):
            with pytest.raises(InvalidTokenError):
                await verifier.verify(jwt.encode(claims(), rogue, algorithm="RS256", headers={"kid": "rogue"}))
        # A forged signature under a known key id is refused too.
        with pytest.raises(InvalidTokenError):
            await verifier.verify(jwt.encode(claims(), rogue, algorithm="RS256", headers={"kid": "rsa-1"}))
    assert server.fetches == 1


async def test_hs256_is_refused_when_the_project_has_no_secret() -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(InvalidTokenError):
            await TokenVerifier(settings(secret=None), http).verify(jwt.encode(claims(), SECRET, algorithm="HS256"))


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    now = [time.time()]
    token = jwt.encode(claims(exp=int(now[0]) + 60), SECRET, algorithm="HS256")
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(settings(), http, clock=lambda: now[0])
        assert (await verifier.verify(token))["aud"] == "authenticated"
        assert (await verifier.verify(token))["aud"] == "authenticated"  # remembered
        now[0] += 120
        with pytest.raises(InvalidTokenError, match="expired"):
            await verifier.verify(token)


async def test_a_token_differing_from_a_remembered_one_is_verified_afresh() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    header, payload, signature = token.split(".")
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(settings(), http)
        await verifier.verify(token)
        forged = ".".join((header, payload, ("A" if signature[0] != "A" else "B") + signature[1:]))
        with pytest.raises(InvalidTokenError):
            await verifier.verify(forged)
        with pytest.raises(InvalidTokenError):
            await verifier.verify(forged)  # a refusal is not remembered as a success either
