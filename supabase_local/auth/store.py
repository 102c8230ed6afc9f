"""`auth.users`, `auth.sessions` and `auth.refresh_tokens` in PostgreSQL, logged in as `supabase_auth_admin`.

Refresh is one transaction holding the token's row lock, so two refreshes with the same token cannot both succeed:
the second finds it revoked, and reuse of a revoked token ends the whole session, as GoTrue's rotation does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from supabase_local.auth.errors import EmailExists, RefreshTokenAlreadyUsed, RefreshTokenNotFound
from supabase_local.auth.tokens import new_refresh_token, refresh_token_digest
from supabase_local.auth.users import DEFAULT_APP_METADATA, USER_COLUMNS, User

LogoutScope = Literal["global", "local", "others"]


@dataclass(frozen=True)
class IssuedSession:
    user: User
    session_id: uuid.UUID
    refresh_token: str
    signed_in_at: int  # unix seconds of the sign-in that started the session (the `amr` timestamp)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class AuthStore:
    def __init__(self, database_url: str, pool_max_size: int = 5) -> None:
        self._dsn = database_url
        self._pool_max_size = pool_max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self._pool_max_size,
                                                           init=_init_connection)
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # users

    async def by_email(self, email: str) -> User | None:
        row = await (await self.pool()).fetchrow(
            f"SELECT {USER_COLUMNS} FROM auth.users WHERE lower(email) = $1", email.lower())
        return User.from_row(row) if row else None

    async def by_id(self, user_id: uuid.UUID) -> User | None:
        row = await (await self.pool()).fetchrow(f"SELECT {USER_COLUMNS} FROM auth.users WHERE id = $1", user_id)
        return User.from_row(row) if row else None

    async def create(self, *, email: str, password_hash: str | None, confirmed: bool,
                     user_metadata: dict[str, Any], app_metadata: dict[str, Any]) -> User:
        try:
            row = await (await self.pool()).fetchrow(
                f"""INSERT INTO auth.users (id, aud, role, email, encrypted_password, email_confirmed_at,
                                            raw_app_meta_data, raw_user_meta_data)
                    VALUES ($1, 'authenticated', 'authenticated', $2, $3, CASE WHEN $4 THEN now() END, $5, $6)
                    RETURNING {USER_COLUMNS}""",
                uuid.uuid4(), email, password_hash, confirmed, {**DEFAULT_APP_METADATA, **app_metadata},
                user_metadata)
        except asyncpg.UniqueViolationError:
            raise EmailExists() from None
        return User.from_row(row)

    async def email_taken(self, email: str, other_than: uuid.UUID) -> bool:
        return bool(await (await self.pool()).fetchval(
            "SELECT 1 FROM auth.users WHERE lower(email) = $1 AND id <> $2", email.lower(), other_than))

    async def update(self, user_id: uuid.UUID, *, email: str | None = None, password_hash: str | None = None,
                     confirm: bool | None = None, user_metadata: dict[str, Any] | None = None,
                     app_metadata: dict[str, Any] | None = None) -> User | None:
        """Only the given fields change; `confirm` False clears the confirmation."""
        if email is not None and await self.email_taken(email, user_id):
            raise EmailExists()
        try:
            row = await (await self.pool()).fetchrow(
                f"""UPDATE auth.users SET
                        email = coalesce($2, email),
                        encrypted_password = coalesce($3, encrypted_password),
                        email_confirmed_at = CASE WHEN $4::boolean IS NULL THEN email_confirmed_at
                                                  WHEN $4 THEN coalesce(email_confirmed_at, now()) END,
                        raw_user_meta_data = coalesce($5, raw_user_meta_data),
                        raw_app_meta_data = coalesce($6, raw_app_meta_data),
                        updated_at = now()
                    WHERE id = $1 RETURNING {USER_COLUMNS}""",
                user_id, email, password_hash, confirm, user_metadata, app_metadata)
        except asyncpg.UniqueViolationError:
            raise EmailExists() from None
        return User.from_row(row) if row else None

    async def delete(self, user_id: uuid.UUID) -> bool:
        # Sessions and refresh tokens go with it (ON DELETE CASCADE), and so does the user's profile.
        return await (await self.pool()).fetchval(
            "WITH gone AS (DELETE FROM auth.users WHERE id = $1 RETURNING 1) SELECT count(*) FROM gone",
            user_id) == 1

    async def page(self, page: int, per_page: int) -> tuple[list[User], int]:
        pool = await self.pool()
        rows = await pool.fetch(f"SELECT {USER_COLUMNS} FROM auth.users ORDER BY created_at, id LIMIT $1 OFFSET $2",
                                per_page, (page - 1) * per_page)
        total = await pool.fetchval("SELECT count(*) FROM auth.users")
        return [User.from_row(row) for row in rows], int(total)

    # sessions

    async def start_session(self, user: User) -> IssuedSession:
        session_id, token = uuid.uuid4(), new_refresh_token()
        async with (await self.pool()).acquire() as conn, conn.transaction():
            created = await conn.fetchval(
                "INSERT INTO auth.sessions (id, user_id) VALUES ($1, $2) RETURNING extract(epoch FROM created_at)",
                session_id, user.id)
            await conn.execute("INSERT INTO auth.refresh_tokens (token, user_id, session_id) VALUES ($1, $2, $3)",
                               refresh_token_digest(token), str(user.id), session_id)
            row = await conn.fetchrow(f"UPDATE auth.users SET last_sign_in_at = now() WHERE id = $1 "
                                      f"RETURNING {USER_COLUMNS}", user.id)
        return IssuedSession(User.from_row(row), session_id, token, int(created))

    async def rotate(self, refresh_token: str) -> IssuedSession:
        """The next refresh token of the session `refresh_token` belongs to; the given one is revoked."""
        digest = refresh_token_digest(refresh_token)
        reused = False
        async with (await self.pool()).acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """SELECT t.id, t.revoked, t.session_id, s.user_id, extract(epoch FROM s.created_at) AS created
                   FROM auth.refresh_tokens t JOIN auth.sessions s ON s.id = t.session_id
                   WHERE t.token = $1 FOR UPDATE OF t""", digest)
            if row is None:
                raise RefreshTokenNotFound()
            if row["revoked"]:
                # Someone holds a token that was already exchanged: end the session for every holder.
                await conn.execute("DELETE FROM auth.sessions WHERE id = $1", row["session_id"])
                reused = True
            else:
                token = new_refresh_token()
                await conn.execute("UPDATE auth.refresh_tokens SET revoked = true, updated_at = now() WHERE id = $1",
                                   row["id"])
                await conn.execute(
                    "INSERT INTO auth.refresh_tokens (token, user_id, session_id, parent) VALUES ($1, $2, $3, $4)",
                    refresh_token_digest(token), str(row["user_id"]), row["session_id"], digest)
                await conn.execute("UPDATE auth.sessions SET refreshed_at = now(), updated_at = now() WHERE id = $1",
                                   row["session_id"])
                user_row = await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM auth.users WHERE id = $1",
                                               row["user_id"])
        if reused:  # raised after the commit: the session stays ended
            raise RefreshTokenAlreadyUsed()
        return IssuedSession(User.from_row(user_row), row["session_id"], token, int(row["created"]))

    async def session_exists(self, session_id: uuid.UUID) -> bool:
        return bool(await (await self.pool()).fetchval("SELECT 1 FROM auth.sessions WHERE id = $1", session_id))

    async def end_sessions(self, user_id: uuid.UUID, session_id: uuid.UUID | None, scope: LogoutScope) -> None:
        pool = await self.pool()
        if scope == "global":
            await pool.execute("DELETE FROM auth.sessions WHERE user_id = $1", user_id)
        elif session_id is None:
            return  # a token minted outside a sign-in has no session of its own to end or keep
        elif scope == "local":
            await pool.execute("DELETE FROM auth.sessions WHERE id = $1 AND user_id = $2", session_id, user_id)
        else:
            await pool.execute("DELETE FROM auth.sessions WHERE user_id = $1 AND id <> $2", user_id, session_id)
