"""Runs a request's statements as the caller: one asyncpg pool, the caller's role and claims, all or nothing.

PostgREST's way is the default (BEGIN; transaction-local role and `request.jwt.claims`; statements; COMMIT), so
grants and RLS policies decide what a request may see and change. A lone service_role statement takes a shortcut.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from supabase_local.rest.auth import API_ROLES, Identity
from supabase_local.rest.connections import KeptConnections
from supabase_local.rest.errors import RestError, from_postgres, internal_error, logger, singular_mismatch
from supabase_local.rest.sql import Statement

# `set_config('role', r, true)` is SET LOCAL ROLE with the role bound as a value (as PostgREST does it); the role
# was checked against API_ROLES and the database checks the login's membership again.
SET_TRANSACTION_CONTEXT = (
    "SELECT set_config('role', $1::text, true), set_config('request.jwt.claims', $2::text, true), "
    "set_config('request.jwt.claim.role', $1::text, true), set_config('request.jwt.claim.sub', $3::text, true)"
)
SET_SESSION_CONTEXT = (
    "SELECT set_config('role', $1::text, false), set_config('request.jwt.claims', $2::text, false), "
    "set_config('request.jwt.claim.role', $1::text, false), set_config('request.jwt.claim.sub', $3::text, false)"
)
# The one role whose settings may outlive a request on a pooled connection (see Executor.run).
SESSION_ROLE = "service_role"
_STATUS_COUNT = re.compile(r"(\d+)$")


@dataclass
class Outcome:
    """What the statements returned: JSON text of the rows (None when none were asked for), their number, and
    the filtered total when a count was asked for."""

    body: str | None
    rows: int
    total: int | None = None


class GatewayConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection that remembers which service_role claims its session is set to (None: unknown)."""

    _session_claims: str | None = None

    def session_claims(self) -> str | None:
        return self._session_claims

    def remember_session_claims(self, claims_json: str | None) -> None:
        self._session_claims = claims_json


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook: keep the session and skip asyncpg's RESET ALL round trip per request.

    asyncpg rolls back a transaction left open before it calls this; everything else we set is either
    transaction-local or the remembered service_role session.
    """


class Executor:
    """Owns the pool; created on first use, so a mount without lifespan works too."""

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self._sizes = (min_size, max_size)
        self._pool: asyncpg.Pool | None = None
        self._kept: KeptConnections | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    pool = await asyncpg.create_pool(
                        self.dsn, min_size=self._sizes[0], max_size=self._sizes[1],
                        # Statements differ by shape only (values are parameters), so a large cache keeps them
                        # prepared; each is planned per role, PostgreSQL replans when the role differs.
                        statement_cache_size=1024, max_cached_statement_lifetime=0,
                        reset=_keep_session, connection_class=GatewayConnection,
                        server_settings={"application_name": "supabase_local.rest"},
                    )
                    # One connection stays with the pool for the schema cache's reloads.
                    self._kept = KeptConnections(pool, keep=max(self._sizes[1] - 1, 0))
                    self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            if self._kept is not None:
                kept, self._kept = self._kept, None
                await kept.close()
            await pool.close()

    async def run(self, identity: Identity, statements: Sequence[Statement], *, readonly: bool,
                  calls_functions: bool = False, singular: bool = False,
                  max_affected: int | None = None) -> Outcome:
        """Run the statements as `identity`; a failed check (singular, max-affected) rolls everything back.

        The shortcut: a lone statement of the service role runs in its own implicit transaction on a connection
        whose session already is service_role with the same claims: one round trip instead of four. It is safe
        because service_role is the most a gateway connection can become (the login is a member of the three API
        roles only), so whatever a service_role request does to its session grants the next one nothing new; and a
        request of any other role makes the next service_role request on that connection set its session again.
        """
        assert identity.role in API_ROLES
        await self.pool()
        kept = self._kept
        assert kept is not None
        # A transaction is needed to roll back after a check on a write, to bundle statements, to keep functions
        # called by a GET read-only, and to scope the settings of every role but service_role.
        needs_transaction = (identity.role != SESSION_ROLE or len(statements) > 1 or max_affected is not None
                             or (singular and not readonly) or (readonly and calls_functions))
        for attempt in range(2):
            try:
                conn = await kept.acquire()
                # A database error leaves the connection usable (its transaction rolled back); anything else (a
                # lost connection, a cancelled request mid-query) hands it back to the pool to reset or replace.
                healthy = False
                try:
                    if needs_transaction:
                        outcome = await self._run_in_transaction(conn, identity, statements, readonly, singular,
                                                                 max_affected)
                    else:
                        if conn.session_claims() != identity.claims_json:
                            await conn.execute(SET_SESSION_CONTEXT, identity.role, identity.claims_json,
                                               identity.subject)
                            conn.remember_session_claims(identity.claims_json)
                        outcome = await self._run_statements(conn, statements)
                    healthy = True
                except (asyncpg.PostgresError, RestError):
                    healthy = True
                    raise
                finally:
                    await kept.release(conn, healthy=healthy)
                if singular and outcome.rows != 1:
                    raise singular_mismatch(outcome.rows)
                return outcome
            except (asyncpg.exceptions.InvalidCachedStatementError, asyncpg.exceptions.OutdatedSchemaCacheError):
                # A migration changed a table under a prepared statement; asyncpg dropped it: run once more.
                if attempt:
                    raise
            except asyncpg.PostgresError as exc:
                raise from_postgres(exc, identity.role) from exc
            except (OSError, asyncpg.exceptions.InterfaceError) as exc:
                logger.error("database unreachable: %s", exc)
                raise RestError(503, "PGRST001", "Database client error. Retrying the connection.") from exc
        raise internal_error()

    async def _run_in_transaction(self, conn: GatewayConnection, identity: Identity,
                                  statements: Sequence[Statement], readonly: bool, singular: bool,
                                  max_affected: int | None) -> Outcome:
        # Whatever this request's functions do to the session, the next service_role request sets it again.
        conn.remember_session_claims(None)
        async with conn.transaction(readonly=readonly):
            await conn.execute(SET_TRANSACTION_CONTEXT, identity.role, identity.claims_json, identity.subject)
            outcome = await self._run_statements(conn, statements)
            if singular and not readonly and outcome.rows != 1:
                raise singular_mismatch(outcome.rows)
            if max_affected is not None and outcome.rows > max_affected:
                raise RestError(400, "PGRST124", "Query result exceeds max-affected preference constraint",
                                f"The query affects {outcome.rows} rows")
            return outcome

    @staticmethod
    async def _run_statements(conn: asyncpg.Connection, statements: Sequence[Statement]) -> Outcome:
        bodies: list[str] = []
        rows = 0
        total: int | None = None
        for statement in statements:
            if statement.command:
                status = await conn.execute(statement.sql, *statement.args)
                match = _STATUS_COUNT.search(status)
                rows += int(match.group(1)) if match else 0
                continue
            record = await conn.fetchrow(statement.sql, *statement.args)
            assert record is not None
            rows += record["page_rows"]
            if record["body"] is not None:
                bodies.append(record["body"])
            if record["total"] is not None:
                total = (total or 0) + record["total"]
        if len(bodies) <= 1:
            return Outcome(bodies[0] if bodies else None, rows, total)
        # Several INSERTs of one request (missing=default groups): join their JSON arrays.
        inner = [body[1:-1] for body in bodies if body != "[]"]
        return Outcome("[" + ",".join(inner) + "]", rows, total)
