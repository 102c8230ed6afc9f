"""The crm_server instances sharing one store: each one's URL, heartbeat and whether it is stopping.

An instance is live while its heartbeat is younger than a lease TTL and it is not stopping; the live ones divide
the accounts between them (crm_server.telegram.shares) and forward requests to each other by these URLs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.store.dialect import insert_for
from crm_server.store.schema import instances


@dataclass(frozen=True)
class InstanceRecord:
    instance_id: str
    url: str
    heartbeat_at: float
    stopping: bool


class InstanceTable:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def heartbeat(self, instance_id: str, url: str) -> None:
        """Say this instance lives (and where it answers); made on its first call."""
        now = time.time()
        statement = insert_for(self._engine, instances).values(
            instance_id=instance_id, url=url, started_at=now, heartbeat_at=now, stopping=False)
        statement = statement.on_conflict_do_update(
            index_elements=[instances.c.instance_id], set_={"url": url, "heartbeat_at": now})
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def mark_stopping(self, instance_id: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(instances).where(instances.c.instance_id == instance_id).values(stopping=True))

    async def remove(self, instance_id: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(instances).where(instances.c.instance_id == instance_id))

    async def live(self, ttl: float) -> list[InstanceRecord]:
        """Instances heard from within `ttl` seconds and not stopping."""
        since = time.time() - ttl
        query = select(instances).where(instances.c.heartbeat_at >= since, instances.c.stopping.is_(False))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query.order_by(instances.c.instance_id))).all()
        return [InstanceRecord(row.instance_id, row.url, row.heartbeat_at, row.stopping) for row in rows]

    async def get(self, instance_id: str) -> InstanceRecord | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                select(instances).where(instances.c.instance_id == instance_id))).first()
        return InstanceRecord(row.instance_id, row.url, row.heartbeat_at, row.stopping) if row is not None else None

    async def others_at(self, url: str, instance_id: str) -> list[str]:
        """Ids of other instances registered at `url`: earlier processes on this address, which must be gone."""
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(instances.c.instance_id).where(
                instances.c.url == url, instances.c.instance_id != instance_id))).all()
        return [row.instance_id for row in rows]

    async def forget_silent(self, older_than: float) -> None:
        """Rows of instances gone long ago (housekeeping)."""
        async with self._engine.begin() as connection:
            await connection.execute(delete(instances).where(instances.c.heartbeat_at < older_than))
