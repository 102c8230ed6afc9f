"""Stored API keys: hashes bound to a project (or to every project, for admin keys)."""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.keys import ApiPrincipal, generate_key, hash_key, key_matches
from crm_server.store.schema import api_keys


class ApiKeyTable:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, project_id: str | None) -> str:
        """A new key for `project_id` (None = admin). Returns the key; only its hash is kept."""
        key = generate_key()
        async with self._engine.begin() as connection:
            await connection.execute(
                api_keys.insert().values(key_hash=hash_key(key), project_id=project_id, created_at=time.time())
            )
        return key

    async def has_admin_key(self) -> bool:
        async with self._engine.connect() as connection:
            count = await connection.scalar(
                select(func.count()).select_from(api_keys).where(api_keys.c.project_id.is_(None))
            )
        return bool(count)

    async def authenticate(self, key: str) -> ApiPrincipal | None:
        key_hash = hash_key(key)
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(
                    select(api_keys.c.key_hash, api_keys.c.project_id).where(api_keys.c.key_hash == key_hash)
                )
            ).first()
        if row is None or not key_matches(key, row.key_hash):
            return None
        return ApiPrincipal(key_hash=row.key_hash, project_id=row.project_id)
