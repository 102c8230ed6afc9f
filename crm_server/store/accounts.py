"""Telegram accounts per project: encrypted session, identity, login status and the lease that says which server runs it.

The lease is a row-level compare-and-set with expiry, so it works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_server.store.cipher import SecretCipher
from crm_server.store.dialect import insert_for
from crm_server.store.schema import StoredStatus, accounts, instances


class PhoneHeldByAnotherProject(Exception):
    """The phone is another project's account on this server: a Telegram account belongs to one project."""


@dataclass(frozen=True)
class AccountRecord:
    project_id: str
    phone: str
    status: StoredStatus
    user_id: int | None
    username: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    runtime_state: str | None = None  # the holder's live AccountState, as it last wrote it

    @property
    def authorized(self) -> bool:
        return self.status == StoredStatus.AUTHORIZED

    def leased_by_other(self, owner: str, now: float) -> bool:
        return (
            self.lease_owner is not None
            and self.lease_owner != owner
            and self.lease_expires_at is not None
            and self.lease_expires_at >= now
        )


@dataclass(frozen=True)
class LeaseHolder:
    project_id: str
    owner: str | None
    expires_at: float | None
    url: str | None  # the holder's CRM_INSTANCE_URL (None: it never registered, or is gone from the registry)

    def other_than(self, owner: str, now: float) -> bool:
        return self.owner is not None and self.owner != owner and self.expires_at is not None \
            and self.expires_at >= now


def _record(row: object) -> AccountRecord:
    return AccountRecord(
        project_id=row.project_id,  # type: ignore[attr-defined]
        phone=row.phone,  # type: ignore[attr-defined]
        status=StoredStatus(row.status),  # type: ignore[attr-defined]
        user_id=row.user_id,  # type: ignore[attr-defined]
        username=row.username,  # type: ignore[attr-defined]
        lease_owner=row.lease_owner,  # type: ignore[attr-defined]
        lease_expires_at=row.lease_expires_at,  # type: ignore[attr-defined]
        runtime_state=row.runtime_state,  # type: ignore[attr-defined]
    )


_RECORD_COLUMNS = (
    accounts.c.project_id,
    accounts.c.phone,
    accounts.c.status,
    accounts.c.user_id,
    accounts.c.username,
    accounts.c.lease_owner,
    accounts.c.lease_expires_at,
    accounts.c.runtime_state,
)


def _key(project_id: str, phone: str):  # type: ignore[no-untyped-def]
    return and_(accounts.c.project_id == project_id, accounts.c.phone == phone)


class AccountTable:
    def __init__(self, engine: AsyncEngine, cipher: SecretCipher) -> None:
        self._engine = engine
        self._cipher = cipher

    async def ensure(self, project_id: str, phone: str) -> AccountRecord:
        """The project's account for `phone`, made when missing; PhoneHeldByAnotherProject when the phone is
        another project's (its session, its chats and its login are that project's alone)."""
        now = time.time()
        async with self._engine.begin() as connection:
            other = await connection.scalar(
                select(accounts.c.project_id).where(accounts.c.phone == phone, accounts.c.project_id != project_id)
                .limit(1))
            if other is not None:
                raise PhoneHeldByAnotherProject()
            await connection.execute(
                insert_for(self._engine, accounts)
                .values(project_id=project_id, phone=phone, status=StoredStatus.AUTH_REQUIRED, created_at=now,
                        updated_at=now)
                .on_conflict_do_nothing(index_elements=[accounts.c.project_id, accounts.c.phone])
            )
            row = (await connection.execute(select(*_RECORD_COLUMNS).where(_key(project_id, phone)))).one()
        return _record(row)

    async def get(self, project_id: str, phone: str) -> AccountRecord | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(*_RECORD_COLUMNS).where(_key(project_id, phone)))).first()
        return _record(row) if row is not None else None

    async def list(self, project_id: str | None = None, phone: str | None = None) -> list[AccountRecord]:
        query = select(*_RECORD_COLUMNS).order_by(accounts.c.project_id, accounts.c.phone)
        if project_id is not None:
            query = query.where(accounts.c.project_id == project_id)
        if phone is not None:
            query = query.where(accounts.c.phone == phone)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_record(row) for row in rows]

    async def load_session(self, project_id: str, phone: str) -> bytes | None:
        async with self._engine.connect() as connection:
            token = await connection.scalar(select(accounts.c.session).where(_key(project_id, phone)))
        return self._cipher.decrypt(token) if token else None

    async def save_session(self, project_id: str, phone: str, plaintext: bytes, owner: str) -> bool:
        """Store the session if `owner` still holds the lease; a server that lost it must not overwrite
        the new owner's update state with its stale one. False when fenced off."""
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(accounts)
                .where(_key(project_id, phone), accounts.c.lease_owner == owner)
                .values(session=self._cipher.encrypt(plaintext), updated_at=time.time())
            )
        return result.rowcount == 1

    async def mark_authorized(self, project_id: str, phone: str, user_id: int, username: str | None) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(accounts)
                .where(_key(project_id, phone))
                .values(status=StoredStatus.AUTHORIZED, user_id=user_id, username=username, updated_at=time.time())
            )

    async def mark_logged_out(self, project_id: str, phone: str) -> None:
        """The session is dead (revoked, deactivated, logged out): drop it so nothing tries it again."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(accounts)
                .where(_key(project_id, phone))
                .values(status=StoredStatus.LOGGED_OUT, session=None, updated_at=time.time())
            )

    async def delete(self, project_id: str, phone: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(accounts).where(_key(project_id, phone)))

    # --- leases -------------------------------------------------------------------------------

    async def acquire_lease(self, project_id: str, phone: str, owner: str, ttl: float) -> bool:
        """Take (or extend) the lease unless another owner holds an unexpired one."""
        now = time.time()
        async with self._engine.begin() as connection:
            result = await connection.execute(
                update(accounts)
                .where(
                    _key(project_id, phone),
                    or_(
                        accounts.c.lease_owner.is_(None),
                        accounts.c.lease_owner == owner,
                        accounts.c.lease_expires_at < now,
                    ),
                )
                .values(lease_owner=owner, lease_expires_at=now + ttl)
            )
        return result.rowcount == 1

    async def renew_leases(self, owner: str, ttl: float) -> set[tuple[str, str]]:
        """Extend every lease `owner` still holds; returns those (project_id, phone) it holds."""
        now = time.time()
        async with self._engine.begin() as connection:
            await connection.execute(
                update(accounts).where(accounts.c.lease_owner == owner).values(lease_expires_at=now + ttl)
            )
            rows = (
                await connection.execute(
                    select(accounts.c.project_id, accounts.c.phone).where(accounts.c.lease_owner == owner)
                )
            ).all()
        return {(row.project_id, row.phone) for row in rows}

    async def release_lease(self, project_id: str, phone: str, owner: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(accounts)
                .where(_key(project_id, phone), accounts.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    async def release_all_leases(self, owner: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(accounts).where(accounts.c.lease_owner == owner).values(lease_owner=None, lease_expires_at=None)
            )

    async def set_runtime_state(self, project_id: str, phone: str, owner: str, state: str) -> None:
        """The holder's live state, for the other instances' /telegram/status (only while `owner` holds it)."""
        async with self._engine.begin() as connection:
            await connection.execute(
                update(accounts).where(_key(project_id, phone), accounts.c.lease_owner == owner)
                .values(runtime_state=state))

    async def holder(self, project_id: str | None, phone: str) -> LeaseHolder | None:
        """Who holds the account's lease and where it answers, in one query (a forward's only store read); None when
        there is no such account. `project_id` None: the phone's account in whichever project has it."""
        query = (select(accounts.c.project_id, accounts.c.lease_owner, accounts.c.lease_expires_at, instances.c.url)
                 .select_from(accounts.outerjoin(instances, instances.c.instance_id == accounts.c.lease_owner))
                 .where(accounts.c.phone == phone))
        if project_id is not None:
            query = query.where(accounts.c.project_id == project_id)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query.limit(1))).first()
        if row is None:
            return None
        return LeaseHolder(row.project_id, row.lease_owner, row.lease_expires_at, row.url)

    async def by_phone(self, phone: str) -> AccountRecord | None:
        """The account of `phone` in whichever project has it (a phone is one project's: see `ensure`)."""
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(*_RECORD_COLUMNS).where(accounts.c.phone == phone).limit(1))).first()
        return _record(row) if row is not None else None

    async def count_authorized(self) -> int:
        async with self._engine.connect() as connection:
            return int(await connection.scalar(
                select(func.count()).select_from(accounts).where(accounts.c.status == StoredStatus.AUTHORIZED)) or 0)

    async def list_claimable(self, owner: str) -> list[AccountRecord]:
        """Authorized accounts no other live server holds: the ones this server should run."""
        now = time.time()
        query = select(*_RECORD_COLUMNS).where(
            accounts.c.status == StoredStatus.AUTHORIZED,
            or_(
                accounts.c.lease_owner.is_(None),
                accounts.c.lease_owner == owner,
                accounts.c.lease_expires_at < now,
            ),
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query.order_by(accounts.c.id))).all()
        return [_record(row) for row in rows]
