"""Idempotency records for sends: the first success response per (project, Idempotency-Key), kept 24 hours.

A key is claimed (row with no response) before the send, so two concurrent requests with one key send once; a claim
and a completion are one statement each.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, delete, null, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.store.dialect import insert_for
from crm_server.store.schema import idempotency

RETENTION_SECONDS = 24 * 3600
# A claim without a response this old belongs to a process that died mid-send; let the key be used again.
ABANDONED_CLAIM_SECONDS = 300


@dataclass(frozen=True)
class IdempotencyClaim:
    """`claimed`: this request owns the key and must send; else `response` is the first result (None while in flight)."""

    claimed: bool
    response: dict[str, Any] | None = None


class IdempotencyTable:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Claim and complete are one statement each, atomic alone: without BEGIN/COMMIT that is one round trip.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def claim(self, project_id: str, key: str) -> IdempotencyClaim:
        """One statement: insert the claim, or take over a record that no longer dedupes (expired, or a claim its
        process abandoned), or else read the record as it is. The row lock of ON CONFLICT serialises concurrent
        claims of one key; the one whose claim id the row holds afterwards owns it."""
        now = time.time()
        claim_id = secrets.token_hex(16)
        existing = idempotency.c
        stale = or_(existing.created_at < now - RETENTION_SECONDS,
                    and_(existing.response.is_(None), existing.created_at < now - ABANDONED_CLAIM_SECONDS))
        statement = insert_for(self._engine, idempotency).values(
            project_id=project_id, key=key, response=None, created_at=now, claim_id=claim_id)
        statement = statement.on_conflict_do_update(
            index_elements=[existing.project_id, existing.key],
            set_={"response": case((stale, null()), else_=existing.response),
                  "created_at": case((stale, statement.excluded.created_at), else_=existing.created_at),
                  "claim_id": case((stale, statement.excluded.claim_id), else_=existing.claim_id)},
        ).returning(existing.claim_id, existing.response)
        async with self._autocommit.connect() as connection:
            row = (await connection.execute(statement)).one()
        if row.claim_id == claim_id:
            return IdempotencyClaim(claimed=True)
        return IdempotencyClaim(claimed=False, response=json.loads(row.response) if row.response else None)

    async def complete(self, project_id: str, key: str, response: dict[str, Any]) -> None:
        async with self._autocommit.connect() as connection:
            await connection.execute(
                update(idempotency)
                .where(idempotency.c.project_id == project_id, idempotency.c.key == key)
                .values(response=json.dumps(response))
            )

    async def release(self, project_id: str, key: str) -> None:
        """The claimed send failed: forget the claim so the caller may retry with the same key."""
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(idempotency).where(
                    idempotency.c.project_id == project_id,
                    idempotency.c.key == key,
                    idempotency.c.response.is_(None),
                )
            )

    async def purge_expired(self) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(idempotency).where(idempotency.c.created_at < time.time() - RETENTION_SECONDS)
            )
        return result.rowcount or 0
