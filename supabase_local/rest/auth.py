"""Who is calling: the JWT from `Authorization: Bearer` (else `apikey`), verified with the project's HS256 secret.

The result is the database role the request runs as and the claims RLS policies read through `auth.jwt()`.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from supabase_local.rest.errors import RestError

# The only roles a token may name: anything else could switch the gateway's login into an arbitrary role.
API_ROLES = frozenset({"anon", "authenticated", "service_role"})


@dataclass(frozen=True)
class Identity:
    role: str
    claims: Mapping[str, Any]
    claims_json: str  # what `request.jwt.claims` is set to
    subject: str  # `sub`, or "" for API keys
    expires_at: float | None


def _unauthorized(message: str, code: str = "PGRST301") -> RestError:
    # PostgREST names the problem in WWW-Authenticate as well, as RFC 6750 asks.
    description = message.replace('"', "'")
    return RestError(401, code, message, headers={
        "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'})


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The user's session token wins over the project key (header, else `?apikey=`), as Supabase's gateway decides."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    apikey = headers.get("apikey") or (query or {}).get("apikey")
    return apikey.strip() if apikey and apikey.strip() else None


class JwtVerifier:
    """Verifies tokens and remembers the verified ones, so a client's repeated token costs a dict lookup."""

    def __init__(self, secret: str, cache_size: int = 4096, leeway: float = 0.0) -> None:
        self._secret = secret
        self._cache: OrderedDict[str, Identity] = OrderedDict()
        self._cache_size = cache_size
        self._leeway = leeway

    def identify(self, headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> Identity:
        token = bearer_token(headers, query)
        if token is None:
            # Supabase's API gateway refuses a request with no key before PostgREST sees it.
            raise RestError(401, "PGRST302", "No API key found in request",
                            hint="No `apikey` request header or url param was found.")
        return self.verify(token)

    def verify(self, token: str) -> Identity:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at is None or cached.expires_at + self._leeway > now:
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
            raise _unauthorized("JWT expired", "PGRST303")
        identity = self._decode(token)
        self._cache[token] = identity
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return identity

    def _decode(self, token: str) -> Identity:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], leeway=self._leeway,
                                # PostgREST checks `aud` only when configured to; Supabase's is not.
                                options={"verify_aud": False, "require": []})
        except jwt.ExpiredSignatureError as exc:
            raise _unauthorized("JWT expired", "PGRST303") from exc
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"JWT is invalid: {exc}") from exc
        role = claims.get("role", "anon")
        if role not in API_ROLES:
            raise _unauthorized(f"JWT role {role!r} is not one of anon, authenticated, service_role")
        expires = claims.get("exp")
        subject = claims.get("sub")
        return Identity(
            role=role,
            claims=claims,
            claims_json=json.dumps(claims, separators=(",", ":")),
            subject=str(subject) if subject is not None else "",
            expires_at=float(expires) if isinstance(expires, (int, float)) else None,
        )
