"""Prepared media of incoming messages: which file on disk belongs to which outbox event, and its checksum.

The files themselves are crm_server.media.files'; this table is how a retried delivery finds its download again,
how `GET /media/{id}` finds a file, and what the retention sweep and the disk budget count.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.store.dialect import insert_for
from crm_server.store.schema import OutboxState, media, outbox


@dataclass(frozen=True)
class MediaRecord:
    event_id: str
    media_id: str
    project_id: str
    phone: str
    kind: str
    mime_type: str | None
    file_name: str | None
    path: str | None  # None: no file, `error` says why
    size: int | None
    sha256: str | None
    error: str | None
    created_at: float
    delivered_at: float | None = None
    instance_id: str | None = None  # whose disk holds the file (set by the table at save)


def _record(row: object) -> MediaRecord:
    return MediaRecord(**{column.name: getattr(row, column.name) for column in media.columns})


class MediaTable:
    def __init__(self, engine: AsyncEngine, instance_id: str | None = None) -> None:
        self._engine = engine
        # Recorded with every file saved: with several instances only this one's disk has it.
        self._instance_id = instance_id

    async def get(self, event_id: str) -> MediaRecord | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(media).where(media.c.event_id == event_id))).first()
        return _record(row) if row is not None else None

    async def by_media_id(self, media_id: str) -> MediaRecord | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(media).where(media.c.media_id == media_id))).first()
        return _record(row) if row is not None else None

    async def save(self, record: MediaRecord) -> MediaRecord:
        """Store `record` unless its event has one already; returns the one stored (the first wins)."""
        values = {column.name: getattr(record, column.name) for column in media.columns}
        values["instance_id"] = values["instance_id"] or self._instance_id
        statement = (
            insert_for(self._engine, media)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[media.c.event_id])
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)
        stored = await self.get(record.event_id)
        assert stored is not None
        return stored

    async def disk_used(self) -> int:
        async with self._engine.connect() as connection:
            total = await connection.scalar(select(func.sum(media.c.size)).where(media.c.path.is_not(None)))
        return int(total or 0)

    async def note_deliveries(self) -> None:
        """Copy the delivery time of each event whose file is not known as delivered yet from the outbox."""
        delivered = (
            select(outbox.c.delivered_at)
            .where(outbox.c.event_id == media.c.event_id, outbox.c.state == OutboxState.DELIVERED)
            .scalar_subquery()
        )
        async with self._engine.begin() as connection:
            await connection.execute(
                update(media).where(media.c.delivered_at.is_(None)).values(delivered_at=delivered)
            )

    async def expired(self, delivered_before: float, orphaned_before: float) -> list[MediaRecord]:
        """Delivered before `delivered_before`, or (made before `orphaned_before`) with no outbox row any more: the
        registration was removed, or an operator's purge took the event."""
        orphan = and_(media.c.created_at < orphaned_before,
                      ~exists().where(outbox.c.event_id == media.c.event_id))
        statement = select(media).where((media.c.delivered_at < delivered_before) | orphan)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [_record(row) for row in rows]

    async def oldest_delivered(self, limit: int) -> list[MediaRecord]:
        """Delivered files, oldest delivery first: the first to go when the disk budget is full."""
        statement = (
            select(media)
            .where(media.c.delivered_at.is_not(None), media.c.path.is_not(None))
            .order_by(media.c.delivered_at)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return [_record(row) for row in rows]

    async def forget(self, event_ids: list[str]) -> None:
        if not event_ids:
            return
        async with self._engine.begin() as connection:
            await connection.execute(delete(media).where(media.c.event_id.in_(event_ids)))
