"""API keys: how they are made, hashed, compared and bound to a project.

Only the SHA-256 of a key is ever stored; the key itself is shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "tgcrm_"


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
