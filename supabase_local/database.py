"""The local Supabase database: embedded PostgreSQL (or an existing server by URL) made ready for the API.

Ready means: Supabase bootstrap applied, migrations applied, seed applied when asked, and the `authenticator`
(REST gateway) and `supabase_auth_admin` (auth service) logins, whose passwords are generated once and kept in the
state folder.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from safeguards.private_files import create_private_file, make_private_dir
from supabase_local.migrations import apply_migrations, apply_seed, bootstrap
from supabase_local.postgres import EmbeddedPostgres, PostgresConfig


@dataclass(frozen=True)
class DatabaseUrls:
    admin: str  # superuser: migrations, tests, benches
    authenticator: str  # what the REST gateway logs in as
    auth_admin: str  # what the auth service (/auth/v1) logs in as: the `auth` tables only


def _with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _secret_file(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    make_private_dir(path.parent)
    value = secrets.token_urlsafe(24)
    if not create_private_file(path, value.encode()):  # another process made it first
        return path.read_text().strip()
    return value


class LocalDatabase:
    """Starts (when embedded) and prepares the database; `stop()` stops only what it started."""

    def __init__(self, state_dir: Path, port: int = 54322, database_url: str | None = None,
                 durable: bool = True) -> None:
        self.state_dir = state_dir
        self.database_url = database_url
        self.server: EmbeddedPostgres | None = None
        if database_url is None:
            self.server = EmbeddedPostgres(PostgresConfig(data_dir=state_dir / "postgres", port=port,
                                                          durable=durable, state_dir=state_dir))

    def start(self) -> None:
        make_private_dir(self.state_dir)
        if self.server is not None:
            self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def admin_url(self) -> str:
        if self.server is not None:
            return self.server.dsn
        assert self.database_url is not None
        return self.database_url

    def urls(self) -> DatabaseUrls:
        password = _secret_file(self.state_dir / "authenticator.password")
        auth_password = _secret_file(self.state_dir / "auth_admin.password")
        return DatabaseUrls(admin=self.admin_url,
                            authenticator=_with_user(self.admin_url, "authenticator", password),
                            auth_admin=_with_user(self.admin_url, "supabase_auth_admin", auth_password))

    async def prepare(self, seed: bool = False) -> list[str]:
        """Bootstrap, migrate and optionally seed; returns the migration versions applied now."""
        password = _secret_file(self.state_dir / "authenticator.password")
        auth_password = _secret_file(self.state_dir / "auth_admin.password")
        conn = await asyncpg.connect(self.admin_url)
        try:
            await bootstrap(conn, password, auth_password)
            applied = await apply_migrations(conn)
            if seed:
                await apply_seed(conn)
            return applied
        finally:
            await conn.close()
