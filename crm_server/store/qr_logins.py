"""Which instance runs each QR login in progress: the login's client (its token, its wait for the scan) lives in that
process's memory, so a poll reaching another instance is forwarded there.

Only the login id and the instance are kept (no token, no project: the owner checks the project as always).
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.store.schema import qr_logins


class QrLoginTable:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def record(self, login_id: str, instance_id: str, expires_at: float) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                qr_logins.insert().values(login_id=login_id, instance_id=instance_id, expires_at=expires_at))

    async def instance_of(self, login_id: str) -> str | None:
        async with self._engine.connect() as connection:
            return await connection.scalar(  # type: ignore[no-any-return]
                select(qr_logins.c.instance_id).where(qr_logins.c.login_id == login_id,
                                                      qr_logins.c.expires_at >= time.time()))

    async def purge_expired(self) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(qr_logins).where(qr_logins.c.expires_at < time.time()))
