"""The local project's JWT secret and the keys signed with it, made the way `supabase start` makes them.

The secret is generated once and kept under the state folder, so keys printed yesterday still work today.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

from safeguards.private_files import create_private_file, make_private_dir

ISSUER = "supabase-local"
# API keys are long-lived, as Supabase's are; user tokens are short.
API_KEY_LIFETIME = 10 * 365 * 24 * 3600
USER_TOKEN_LIFETIME = 24 * 3600


@dataclass(frozen=True)
class LocalKeys:
    jwt_secret: str
    anon_key: str
    service_role_key: str


def sign(claims: dict[str, object], secret: str) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def api_key(role: str, secret: str, now: int | None = None) -> str:
    issued = int(time.time()) if now is None else now
    return sign({"iss": ISSUER, "role": role, "iat": issued, "exp": issued + API_KEY_LIFETIME}, secret)


def user_token(user_id: str | uuid.UUID, secret: str, lifetime: int = USER_TOKEN_LIFETIME,
               email: str | None = None) -> str:
    """A user's access token as Supabase Auth issues it: role `authenticated`, audience `authenticated`."""
    issued = int(time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "sub": str(uuid.UUID(str(user_id))),
        "aud": "authenticated",
        "role": "authenticated",
        "iat": issued,
        "exp": issued + lifetime,
    }
    if email:
        claims["email"] = email
    return sign(claims, secret)


def load_or_create_secret(state_dir: Path) -> str:
    path = state_dir / "jwt_secret"
    if path.exists():
        return path.read_text().strip()
    make_private_dir(state_dir)
    secret = secrets.token_urlsafe(48)
    if not create_private_file(path, secret.encode()):  # another process made it first: theirs is the secret
        return path.read_text().strip()
    return secret


def local_keys(state_dir: Path) -> LocalKeys:
    secret = load_or_create_secret(state_dir)
    return LocalKeys(jwt_secret=secret, anon_key=api_key("anon", secret),
                     service_role_key=api_key("service_role", secret))
