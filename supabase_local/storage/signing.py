"""Signed URLs: a JWT signed with the project's JWT secret carrying `url` = `<bucket>/<name>` and `exp` (an upload
token also `owner` and `upsert`), as Supabase Storage makes them, so the same secret verifies them here and there.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import jwt

from supabase_local.storage.errors import StorageError, invalid_jwt, invalid_signature

# Hosted Storage takes any positive expiresIn; a bound keeps a typo from minting a capability for centuries.
MAX_EXPIRES_IN_SECONDS = 10 * 365 * 24 * 3600
# How long a signed upload URL stays valid: two hours, as Supabase Storage's default.
UPLOAD_URL_SECONDS = 2 * 3600


def sign_object_url(secret: str, bucket_id: str, name: str, expires_in: int, now: float | None = None) -> str:
    """The path (relative to /storage/v1) storage3 turns into a full URL: `/object/sign/<bucket>/<name>?token=`."""
    issued = int(time.time() if now is None else now)
    url = f"{bucket_id}/{name}"
    token = jwt.encode({"url": url, "iat": issued, "exp": issued + expires_in}, secret, algorithm="HS256")
    return f"/object/sign/{quote(url, safe='/')}?token={token}"


def sign_upload_url(secret: str, bucket_id: str, name: str, owner: str, upsert: bool,
                    now: float | None = None) -> str:
    """`/object/upload/sign/<bucket>/<name>?token=`: whoever holds it may upload that one object, as `owner`."""
    issued = int(time.time() if now is None else now)
    url = f"{bucket_id}/{name}"
    claims = {"url": url, "owner": owner or None, "upsert": upsert, "iat": issued, "exp": issued + UPLOAD_URL_SECONDS}
    token = jwt.encode(claims, secret, algorithm="HS256")
    return f"/object/upload/sign/{quote(url, safe='/')}?token={token}"


def verify_object_token(secret: str, token: str, bucket_id: str, name: str) -> dict[str, Any]:
    """The token's claims; a forged, expired or malformed token is InvalidJWT, one for another object
    InvalidSignature."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "url"]})
    except jwt.ExpiredSignatureError as exc:
        raise invalid_jwt("jwt expired") from exc
    except jwt.PyJWTError as exc:
        raise invalid_jwt("invalid signature" if isinstance(exc, jwt.InvalidSignatureError)
                          else "jwt malformed") from exc
    if claims.get("url") != f"{bucket_id}/{name}":
        raise invalid_signature()
    return claims


def parse_expires_in(value: object) -> int:
    """storage3 sends `expiresIn` as a string of digits; the JS client sends a number."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 1 <= value <= MAX_EXPIRES_IN_SECONDS:
        raise StorageError(400, "InvalidRequest",
                           f"expiresIn must be a whole number of seconds from 1 to {MAX_EXPIRES_IN_SECONDS}")
    return value
