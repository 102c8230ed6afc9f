"""Idempotency records for sends: the first success response per (project, Idempotency-Key), kept 24 hours.

A key is claimed (row with no response) before the send, so two concurrent requests with one key send once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, select, update
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

    async def claim(self, project_id: str, key: str) -> IdempotencyClaim:
        now = time.time()
        where = and_(idempotency.c.project_id == project_id, idempotency.c.key == key)
        async with self._engine.begin() as connection:
            # An expired record no longer dedupes: drop it so the key can be claimed afresh.
            await connection.execute(delete(idempotency).where(where, idempotency.c.created_at < now - RETENTION_SECONDS))
            await connection.execute(
                delete(idempotency).where(
                    where, idempotency.c.response.is_(None), idempotency.c.created_at < now - ABANDONED_CLAIM_SECONDS
                )
            )
            inserted = (
                await connection.execute(
                    insert_for(self._engine, idempotency)
                    .values(project_id=project_id, key=key, response=None, created_at=now)
                    .on_conflict_do_nothing(index_elements=[idempotency.c.project_id, idempotency.c.key])
                    .returning(idempotency.c.key)
                )
            ).first()
            if inserted is not None:
                return IdempotencyClaim(claimed=True)
            stored = await connection.scalar(select(idempotency.c.response).where(where))
        return IdempotencyClaim(claimed=False, response=json.loads(stored) if stored else None)

    async def complete(self, project_id: str, key: str, response: dict[str, Any]) -> None:
        async with self._engine.begin() as connection:
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
