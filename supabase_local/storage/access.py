"""Who runs a Storage query: the caller, in a transaction with its role and JWT claims set as the REST gateway
sets them, so the RLS policies on storage.objects and storage.buckets decide; or the service role, for what
Storage itself looks up with its superuser (bucket limits, public buckets, signed-URL reads).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import asyncpg

from supabase_local.rest.auth import Identity, JwtVerifier
from supabase_local.rest.errors import RestError
from supabase_local.rest.executor import SET_TRANSACTION_CONTEXT
from supabase_local.storage.errors import (
    StorageError,
    access_denied,
    internal_error,
    invalid_jwt,
    key_already_exists,
    logger,
    no_such_bucket,
)

SERVICE = Identity(role="service_role", claims={"role": "service_role"}, claims_json='{"role":"service_role"}',
                   subject="", expires_at=None)


def identify(verifier: JwtVerifier, headers: Mapping[str, str]) -> Identity:
    """The caller, from `Authorization: Bearer` (else `apikey`); Storage answers a bad token with InvalidJWT."""
    try:
        return verifier.identify(headers)
    except RestError as exc:
        raise invalid_jwt(exc.message) from exc


def storage_error_from(exc: asyncpg.PostgresError) -> StorageError:
    """The database's refusals as Storage names them; anything else is Storage's own 500."""
    sqlstate = getattr(exc, "sqlstate", "")
    if sqlstate == "42501":  # RLS refused the row, or the role lacks the grant
        return access_denied()
    if sqlstate == "23505":
        return key_already_exists()
    if sqlstate == "23503":
        return no_such_bucket()
    return internal_error()


class Database:
    """A small asyncpg pool of the gateway's `authenticator` login, created on first use."""

    def __init__(self, dsn: str, max_size: int = 5) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self._max_size,
                        server_settings={"application_name": "supabase_local.storage"})
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @contextlib.asynccontextmanager
    async def transaction(self, identity: Identity) -> AsyncIterator[asyncpg.Connection]:
        """A transaction as `identity`; its database errors leave as StorageError."""
        pool = await self._get_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(SET_TRANSACTION_CONTEXT, identity.role, identity.claims_json, identity.subject)
                yield conn
        except asyncpg.PostgresError as exc:
            error = storage_error_from(exc)
            if error.status >= 500:
                logger.error("storage database error %s: %s", getattr(exc, "sqlstate", "?"), exc)
            raise error from exc
