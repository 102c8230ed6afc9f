"""Password hashing with bcrypt at GoTrue's cost, off the event loop, and the length rules GoTrue applies.

A sign-in for an unknown email still runs one bcrypt check, so its answer takes as long as a wrong password's.
"""

from __future__ import annotations

import asyncio
import functools

import bcrypt

from supabase_local.auth.errors import ValidationFailed, WeakPassword

# GoTrue's bcrypt.DefaultCost: hashes it made verify here and the other way round.
BCRYPT_COST = 10
# bcrypt reads 72 bytes and ignores the rest, so a longer password is refused rather than silently cut.
MAX_PASSWORD_BYTES = 72


def check_password_rules(password: str, minimum_length: int) -> None:
    if len(password) < minimum_length:
        raise WeakPassword(minimum_length)
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValidationFailed(f"password: cannot be longer than {MAX_PASSWORD_BYTES} bytes")


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()


@functools.cache
def _decoy_hash() -> str:
    return _hash("a password nobody has")


def _verify(password: str, hashed: str | None) -> bool:
    encoded = password.encode()
    if hashed is None or len(encoded) > MAX_PASSWORD_BYTES:
        bcrypt.checkpw(encoded[:MAX_PASSWORD_BYTES], _decoy_hash().encode())
        return False
    try:
        return bcrypt.checkpw(encoded, hashed.encode())
    except ValueError:  # not a bcrypt hash (e.g. an empty column): nobody can sign in with it
        return False


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hash, password)


async def verify_password(password: str, hashed: str | None) -> bool:
    return await asyncio.to_thread(_verify, password, hashed)
