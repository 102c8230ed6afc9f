"""Who is calling: the user's Supabase access token verified locally, and the organization from `profiles`.

HS256 tokens are checked with the project's JWT secret; asymmetric ones (RS/ES/EdDSA) with the project's JWKS,
fetched over the shared HTTP client and cached, refetched at most every few seconds when an unknown key id shows up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from starlette.requests import Request
from supabase import AsyncClient

from functions._shared.database import first_row
from functions._shared.errors import InvalidTokenError, MissingTokenError, OrganizationNotFoundError
from functions._shared.settings import FunctionsSettings

log = logging.getLogger("functions.auth")

USER_AUDIENCE = "authenticated"
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"})
# An unknown key id triggers a JWKS refetch, but not more often than this (a flood of forged tokens must not
# become a flood of requests to the auth server).
UNKNOWN_KID_REFETCH_SECONDS = 10.0
# Clock skew allowed on `exp`.
TOKEN_LEEWAY_SECONDS = 5
# Verified tokens remembered (a few KB each at most): enough for every signed-in user of a busy organization.
VERIFIED_TOKENS_KEPT = 4096


@dataclass(frozen=True)
class Caller:
    user_id: str
    organization_id: str


class TokenVerifier:
    """Verifies signature and expiry of a Supabase JWT; `claims` are returned for the caller to check further.

    A verified token is remembered until it expires (bounded, oldest first), so a user's repeated token costs a
    dict lookup instead of a signature check (2 % of the API process's CPU per telegram-send): the exact token
    string is the key, so a changed byte is verified afresh.
    """

    def __init__(self, settings: FunctionsSettings, http: httpx.AsyncClient,
                 clock: Callable[[], float] = time.time) -> None:
        self._secret = settings.supabase_jwt_secret
        self._jwks_url = settings.jwks_url
        self._cache_seconds = settings.jwks_cache_seconds
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._clock = clock
        self._verified: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()

    async def verify(self, token: str) -> dict[str, Any]:
        remembered = self._verified.get(token)
        if remembered is not None:
            claims, expires_at = remembered
            if expires_at + TOKEN_LEEWAY_SECONDS > self._clock():
                self._verified.move_to_end(token)
                return dict(claims)
            del self._verified[token]
            raise InvalidTokenError("The access token has expired")
        claims = await self._verify_signature(token)
        expires_at = claims.get("exp")
        if isinstance(expires_at, (int, float)):
            self._verified[token] = (dict(claims), float(expires_at))
            if len(self._verified) > VERIFIED_TOKENS_KEPT:
                self._verified.popitem(last=False)
        return claims

    async def _verify_signature(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidTokenError("The access token is malformed") from exc
        algorithm = header.get("alg")
        if algorithm == "HS256":
            if not self._secret:
                raise InvalidTokenError("HS256 tokens are not accepted by this project")
            key: Any = self._secret
        elif algorithm in ASYMMETRIC_ALGORITHMS:
            key = (await self._signing_key(header.get("kid"))).key
        else:
            raise InvalidTokenError("The access token's algorithm is not accepted")
        try:
            # Audience is the caller's business (a user function wants "authenticated"); here: signature and expiry.
            return jwt.decode(token, key, algorithms=[algorithm], options={"require": ["exp"], "verify_aud": False},
                              leeway=TOKEN_LEEWAY_SECONDS)
        except jwt.ExpiredSignatureError as exc:
            raise InvalidTokenError("The access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidTokenError() from exc

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        fresh = now - self._fetched_at < self._cache_seconds
        key = self._pick(kid)
        if key is not None and fresh:
            return key
        async with self._lock:
            key = self._pick(kid)
            stale = time.monotonic() - self._fetched_at >= self._cache_seconds
            may_refetch = time.monotonic() - self._fetched_at >= UNKNOWN_KID_REFETCH_SECONDS
            if stale or (key is None and may_refetch):
                await self._fetch()
                key = self._pick(kid)
        if key is None:
            raise InvalidTokenError("The access token was signed with an unknown key")
        return key

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        # A JWKS with a single key may be used without key ids.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _fetch(self) -> None:
        try:
            response = await self._http.get(self._jwks_url)
            response.raise_for_status()
            key_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("could not load the JWKS from %s: %r", self._jwks_url, exc)
            self._fetched_at = time.monotonic()
            if not self._keys:
                raise InvalidTokenError("The project's signing keys are unavailable") from exc
            return
        self._keys = {key.key_id or f"#{index}": key for index, key in enumerate(key_set.keys)}
        self._fetched_at = time.monotonic()


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingTokenError()
    return token.strip()


async def verified_claims(request: Request, verifier: TokenVerifier) -> dict[str, Any]:
    """The request's token claims: those the host verified already (verify_jwt), or verified now."""
    claims = request.scope.get("state", {}).get("jwt_claims")
    if claims is None:
        claims = await verifier.verify(bearer_token(request))
    return claims


async def authenticated_user_id(request: Request, verifier: TokenVerifier) -> str:
    """The calling user's id (401 without a signed-in user's token); their organization is the caller's to read
    (`authenticate`, or inside an rpc that takes the user id)."""
    claims = await verified_claims(request, verifier)
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if USER_AUDIENCE not in audiences:
        raise InvalidTokenError("A signed-in user's access token is required")
    try:
        user_id = str(uuid.UUID(str(claims.get("sub"))))
    except ValueError as exc:
        raise InvalidTokenError("The access token has no user") from exc
    return user_id


async def authenticate(request: Request, verifier: TokenVerifier, db: AsyncClient) -> Caller:
    """The calling user and their organization: 401 without a user token, 404 when the user has no organization."""
    user_id = await authenticated_user_id(request, verifier)
    profile = await first_row(
        db.table("profiles").select("organization_id").eq("id", user_id).limit(1), "loading the user's profile")
    if profile is None or not profile.get("organization_id"):
        raise OrganizationNotFoundError()
    return Caller(user_id=user_id, organization_id=str(profile["organization_id"]))
