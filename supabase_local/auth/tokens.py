"""The tokens of a session: the access JWT with the claims GoTrue puts in it, and opaque refresh tokens.

Refresh tokens are random and stored only as their SHA-256 (supabase_local.auth.store), so they are looked up, never
decoded; each is good for one refresh.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from supabase_local.auth.config import AuthConfig
from supabase_local.auth.users import User


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_at: int
    expires_in: int


def access_token(user: User, session_id: uuid.UUID, signed_in_at: int, config: AuthConfig,
                 now: int | None = None) -> AccessToken:
    issued = int(time.time()) if now is None else now
    expires = issued + config.jwt_expiry
    claims: dict[str, Any] = {
        "iss": config.issuer,
        "sub": str(user.id),
        "aud": user.aud,
        "exp": expires,
        "iat": issued,
        "email": user.email or "",
        "phone": user.phone or "",
        "app_metadata": user.app_metadata,
        "user_metadata": user.user_metadata,
        "role": user.role,
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": signed_in_at}],
        "session_id": str(session_id),
        "is_anonymous": user.is_anonymous,
    }
    return AccessToken(jwt.encode(claims, config.jwt_secret, algorithm="HS256"), expires, config.jwt_expiry)


def new_refresh_token() -> str:
    return secrets.token_urlsafe(24)


def refresh_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
