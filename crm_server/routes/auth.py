"""Who is calling: the `X-API-Key` header checked against the stored hashes, then the key's project against the data.

Successful lookups are cached briefly so a send does not pay a database round trip for its key.
"""

from __future__ import annotations

import time
from typing import Protocol

from starlette.requests import Request

from crm_server.errors import ProjectForbiddenError, UnauthorizedError
from crm_server.keys import ApiPrincipal, hash_key

CACHE_SECONDS = 30.0
MAX_KEY_LENGTH = 256


class KeyLookup(Protocol):
    """Who a key belongs to (crm_server.store.api_keys.ApiKeyTable)."""

    async def authenticate(self, key: str) -> ApiPrincipal | None: ...


class KeyAuthenticator:
    def __init__(self, keys: KeyLookup) -> None:
        self._keys = keys
        self._cache: dict[str, tuple[ApiPrincipal, float]] = {}

    async def authenticate(self, request: Request) -> ApiPrincipal:
        key = request.headers.get("x-api-key", "")
        if not key or len(key) > MAX_KEY_LENGTH:
            raise UnauthorizedError()
        key_hash = hash_key(key)
        cached = self._cache.get(key_hash)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await self._keys.authenticate(key)
        if principal is None:
            raise UnauthorizedError()
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: many distinct valid keys only cost extra lookups
        self._cache[key_hash] = (principal, now + CACHE_SECONDS)
        return principal


def require_project(principal: ApiPrincipal, project_id: str) -> None:
    if not principal.may_access(project_id):
        raise ProjectForbiddenError()


def require_admin(principal: ApiPrincipal) -> None:
    if not principal.is_admin:
        raise ProjectForbiddenError("This route needs an admin API key")
