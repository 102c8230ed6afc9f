"""Logins between send-code and authorization, kept encrypted so any instance can finish one.

What a login needs to go on is the phone code hash, whether the 2FA step was reached, and the Telegram session (auth
key) the code was requested on: a code is only valid on that key. The whole is one Fernet token.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.store.cipher import SecretCipher
from crm_server.store.dialect import insert_for
from crm_server.store.schema import pending_logins


@dataclass(frozen=True)
class StoredLogin:
    phone_code_hash: str
    password_required: bool
    session: str  # the serialized StoreSession the code was requested on (crm_server.telegram.session)
    expires_at: float  # Unix seconds

    def to_bytes(self) -> bytes:
        return json.dumps({"hash": self.phone_code_hash, "password": self.password_required,
                           "session": self.session}).encode()


class PendingLoginTable:
    def __init__(self, engine: AsyncEngine, cipher: SecretCipher) -> None:
        self._engine = engine
        self._cipher = cipher

    async def save(self, project_id: str, phone: str, login: StoredLogin) -> None:
        token = self._cipher.encrypt(login.to_bytes())
        statement = insert_for(self._engine, pending_logins).values(
            project_id=project_id, phone=phone, login=token, expires_at=login.expires_at)
        statement = statement.on_conflict_do_update(
            index_elements=[pending_logins.c.project_id, pending_logins.c.phone],
            set_={"login": token, "expires_at": login.expires_at})
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def load(self, project_id: str, phone: str) -> StoredLogin | None:
        """The account's unexpired pending login, or None."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(
                select(pending_logins.c.login, pending_logins.c.expires_at)
                .where(_key(project_id, phone), pending_logins.c.expires_at >= time.time()))).first()
        if row is None:
            return None
        document = json.loads(self._cipher.decrypt(row.login))
        return StoredLogin(phone_code_hash=document["hash"], password_required=document["password"],
                           session=document["session"], expires_at=row.expires_at)

    async def delete(self, project_id: str, phone: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(pending_logins).where(_key(project_id, phone)))

    async def purge_expired(self) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(pending_logins).where(pending_logins.c.expires_at < time.time()))


def _key(project_id: str, phone: str):  # type: ignore[no-untyped-def]
    return and_(pending_logins.c.project_id == project_id, pending_logins.c.phone == phone)
