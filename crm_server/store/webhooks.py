"""Webhook registrations: where incoming messages of one (project, phone) are delivered, with their secret."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.store.cipher import SecretCipher
from crm_server.store.dialect import insert_for
from crm_server.store.outbox import WebhookHealth, health_columns, health_of
from crm_server.store.schema import webhooks


# What a registration made before event types existed (or without choosing) receives.
DEFAULT_EVENTS = ("message",)


def _events(stored: str | None) -> tuple[str, ...]:
    return tuple(stored.split(",")) if stored else DEFAULT_EVENTS


@dataclass(frozen=True)
class BatchSettings:
    """Batched delivery of a registration: up to `max_events` per POST, the first of them waiting at most
    `max_wait_ms` for the others."""

    max_events: int
    max_wait_ms: int


class Unchanged(enum.Enum):
    """A re-connect that does not name a setting keeps it (`UNCHANGED`), unlike an explicit None (off)."""

    UNCHANGED = "unchanged"


UNCHANGED = Unchanged.UNCHANGED


def _batch(row: Any) -> BatchSettings | None:
    if row.batch_max_events is None:
        return None
    return BatchSettings(max_events=int(row.batch_max_events), max_wait_ms=int(row.batch_max_wait_ms or 0))


@dataclass(frozen=True)
class WebhookRecord:
    project_id: str
    phone: str
    url: str
    secret: str
    enabled: bool
    paused: bool
    secret_header: bool = True
    events: tuple[str, ...] = DEFAULT_EVENTS
    batch: BatchSettings | None = None  # None: one event per POST

    def wants(self, event_type: str) -> bool:
        return event_type in self.events


@dataclass(frozen=True)
class WebhookStatusRecord:
    """A registration without its secret, with how its deliveries are going."""

    url: str
    enabled: bool
    paused: bool
    health: WebhookHealth
    events: tuple[str, ...] = DEFAULT_EVENTS
    batch: BatchSettings | None = None



class WebhookTable:
    def __init__(self, engine: AsyncEngine, cipher: SecretCipher) -> None:
        self._engine = engine
        self._cipher = cipher

    async def upsert(self, project_id: str, phone: str, url: str, secret: str, *, secret_header: bool = True,
                     events: tuple[str, ...] | None = None,
                     batch: BatchSettings | None | Unchanged = UNCHANGED) -> BatchSettings | None:
        """Register or update; `events` None keeps a registration's types (a new one gets DEFAULT_EVENTS);
        `batch` UNCHANGED keeps a registration's batching (a new one is unbatched). Returns the batching now."""
        now = time.time()
        encrypted = self._cipher.encrypt(secret.encode())
        stored_events = ",".join(events) if events is not None else None
        given = batch if isinstance(batch, BatchSettings) else None
        batch_columns = {"batch_max_events": given.max_events if given else None,
                         "batch_max_wait_ms": given.max_wait_ms if given else None}
        statement = insert_for(self._engine, webhooks).values(
            project_id=project_id, phone=phone, url=url, secret=encrypted, enabled=True, secret_header=secret_header,
            events=stored_events, created_at=now, updated_at=now, **batch_columns,
        )
        changes: dict[str, Any] = {"url": url, "secret": encrypted, "enabled": True, "paused": False,
                                   "secret_header": secret_header, "updated_at": now}
        if events is not None:
            changes["events"] = stored_events
        if batch is not UNCHANGED:
            changes.update(batch_columns)
        statement = statement.on_conflict_do_update(
            index_elements=[webhooks.c.project_id, webhooks.c.phone], set_=changes,
        )
        statement = statement.returning(webhooks.c.batch_max_events, webhooks.c.batch_max_wait_ms)
        async with self._engine.begin() as connection:
            stored = (await connection.execute(statement)).one()
        return _batch(stored)

    async def get(self, project_id: str, phone: str) -> WebhookRecord | None:
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(webhooks).where(webhooks.c.project_id == project_id, webhooks.c.phone == phone)
                )
            ).first()
        if row is None:
            return None
        return WebhookRecord(
            project_id=row.project_id,
            phone=row.phone,
            url=row.url,
            secret=self._cipher.decrypt(row.secret).decode(),
            enabled=row.enabled,
            paused=bool(row.paused),
            secret_header=bool(row.secret_header),
            events=_events(row.events),
            batch=_batch(row),
        )

    async def set_enabled(self, project_id: str, phone: str, enabled: bool) -> None:
        """A receiver that answers 410 Gone is disabled until the next connect registers it again."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(webhooks)
                .where(webhooks.c.project_id == project_id, webhooks.c.phone == phone)
                .values(enabled=enabled, updated_at=time.time())
            )

    async def set_paused(self, project_id: str, phone: str, paused: bool) -> bool:
        """Pause or resume delivery to the registration; False when there is none."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(webhooks)
                .where(webhooks.c.project_id == project_id, webhooks.c.phone == phone)
                .values(paused=paused, updated_at=time.time())
            )
        return (result.rowcount or 0) > 0

    async def statuses(self, project_id: str, phone: str | None = None) -> dict[str, WebhookStatusRecord]:
        """phone → registration and delivery health for a project's webhooks, in one query (no secret decrypted)."""
        statement = select(
            webhooks.c.phone, webhooks.c.url, webhooks.c.enabled, webhooks.c.paused, webhooks.c.events,
            webhooks.c.batch_max_events, webhooks.c.batch_max_wait_ms,
            *health_columns(webhooks.c.project_id, webhooks.c.phone),
        ).where(webhooks.c.project_id == project_id)
        if phone is not None:
            statement = statement.where(webhooks.c.phone == phone)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return {row.phone: WebhookStatusRecord(url=row.url, enabled=bool(row.enabled), paused=bool(row.paused),
                                              health=health_of(row), events=_events(row.events),
                                              batch=_batch(row))
                for row in rows}

    async def delete(self, project_id: str, phone: str) -> bool:
        """Remove the registration; False when there was none."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(webhooks).where(webhooks.c.project_id == project_id, webhooks.c.phone == phone)
            )
        return (result.rowcount or 0) > 0
