"""API keys: how they are made, hashed, compared and bound to a project, and who a presented key belongs to.

Only the SHA-256 of a key is ever stored; the key itself is shown once, when created. Successful lookups are cached
briefly so a send does not pay a database round trip for its key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from crm_server.errors import UnauthorizedError

KEY_PREFIX = "tgcrm_"
CACHE_SECONDS = 30.0
MAX_KEY_LENGTH = 256


@dataclass(frozen=True)
class ApiPrincipal:
    """Who a request's key belongs to: one project, or every project (admin)."""

    key_hash: str
    project_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.project_id is None

    def may_access(self, project_id: str) -> bool:
        if self.project_id is None:
            return True
        return hmac.compare_digest(self.project_id.encode(), project_id.encode())


def generate_key() -> str:
    # 32 random bytes: unguessable; the prefix makes leaked keys easy to spot in secret scanners.
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    """Constant-time check of a presented key against a stored hash."""
    return hmac.compare_digest(hash_key(key).encode(), stored_hash.encode())


class KeyLookup(Protocol):
    """Who a key belongs to (crm_server.store.api_keys.ApiKeyTable)."""

    async def authenticate(self, key: str) -> ApiPrincipal | None: ...


class KeyAuthenticator:
    def __init__(self, keys: KeyLookup) -> None:
        self._keys = keys
        self._cache: dict[str, tuple[ApiPrincipal, float]] = {}

    async def principal(self, key: str) -> ApiPrincipal:
        """Whose key this is; UnauthorizedError when it is missing, oversized or unknown."""
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
