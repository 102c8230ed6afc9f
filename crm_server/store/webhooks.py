"""Webhook registrations: where incoming messages of one (project, phone) are delivered, with their secret."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.store.cipher import SecretCipher
from crm_server.store.dialect import insert_for
from crm_server.store.schema import webhooks


@dataclass(frozen=True)
class WebhookRecord:
    project_id: str
    phone: str
    url: str
    secret: str
    enabled: bool


class WebhookTable:
    def __init__(self, engine: AsyncEngine, cipher: SecretCipher) -> None:
        self._engine = engine
        self._cipher = cipher

    async def upsert(self, project_id: str, phone: str, url: str, secret: str) -> None:
        now = time.time()
        encrypted = self._cipher.encrypt(secret.encode())
        statement = insert_for(self._engine, webhooks).values(
            project_id=project_id, phone=phone, url=url, secret=encrypted, enabled=True, created_at=now, updated_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=[webhooks.c.project_id, webhooks.c.phone],
            set_={"url": url, "secret": encrypted, "enabled": True, "updated_at": now},
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

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
        )

    async def set_enabled(self, project_id: str, phone: str, enabled: bool) -> None:
        """A receiver that answers 410 Gone is disabled until the next connect registers it again."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(webhooks)
                .where(webhooks.c.project_id == project_id, webhooks.c.phone == phone)
                .values(enabled=enabled, updated_at=time.time())
            )

    async def urls(self, project_id: str) -> dict[str, str]:
        """phone -> webhook URL for a project's accounts (no secrets decrypted)."""
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(webhooks.c.phone, webhooks.c.url).where(webhooks.c.project_id == project_id)
                )
            ).all()
        return {row.phone: row.url for row in rows}

    async def enabled_by_phone(self, project_id: str) -> dict[str, bool]:
        async with self._engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(webhooks.c.phone, webhooks.c.enabled).where(webhooks.c.project_id == project_id)
                )
            ).all()
        return {row.phone: bool(row.enabled) for row in rows}

    async def delete(self, project_id: str, phone: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                delete(webhooks).where(webhooks.c.project_id == project_id, webhooks.c.phone == phone)
            )
