"""The async engine of the store: SQLite file by default, PostgreSQL by URL, tables created at start.

`Store` bundles the engine with one object per table so callers write `store.accounts.get(...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from crm_server.store.accounts import AccountTable
from crm_server.store.api_keys import ApiKeyTable
from crm_server.store.cipher import SecretCipher
from crm_server.store.idempotency import IdempotencyTable
from crm_server.store.history_jobs import HistoryJobsTable
from crm_server.store.instances import InstanceTable
from crm_server.store.known_messages import KnownMessagesTable
from crm_server.store.media import MediaTable
from crm_server.store.outbox import OutboxTable
from crm_server.store.pending_logins import PendingLoginTable
from crm_server.store.qr_logins import QrLoginTable
from crm_server.store.schema import metadata
from crm_server.store.upgrade import add_missing_columns
from crm_server.store.webhooks import WebhookTable
from safeguards.private_files import create_private_file, make_private_dir


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        # Made 0600 here: SQLite would create it 0644 minus the umask (it holds message texts and phones), and it
        # gives its -wal and -shm files the database file's mode.
        make_private_dir(Path(parsed.database).parent)
        create_private_file(Path(parsed.database))
    # Several processes may share one SQLite file (a second server, `tgcrm keys create`):
    # WAL lets readers run beside a writer and busy_timeout waits for a lock instead of failing.
    # Inside one process a single connection: SQLite has one writer anyway, and with a pool of them the delivery
    # worker's writes and the listener's outbox inserts fought over the file lock through busy_timeout's sleeping
    # backoff (an insert waited 80 ms on average, seconds at worst). One connection queues them in asyncio instead.
    # Every store method uses its connection only inside its own `async with`, so nothing waits for a second one.
    engine = create_async_engine(url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0)

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


class Store:
    def __init__(self, engine: AsyncEngine, cipher: SecretCipher, instance_id: str | None = None) -> None:
        self.engine = engine
        # This process's id among the instances sharing the store (its lease owner id); None for a tool (CLI).
        self.instance_id = instance_id
        self.cipher = cipher
        self.api_keys = ApiKeyTable(engine)
        self.accounts = AccountTable(engine, cipher)
        self.webhooks = WebhookTable(engine, cipher)
        self.idempotency = IdempotencyTable(engine)
        self.outbox = OutboxTable(engine)
        self.media = MediaTable(engine, instance_id)
        self.known_messages = KnownMessagesTable(engine)
        self.history_jobs = HistoryJobsTable(engine)
        self.instances = InstanceTable(engine)
        self.pending_logins = PendingLoginTable(engine, cipher)
        self.qr_logins = QrLoginTable(engine)

    @classmethod
    async def open(cls, url: str, session_key: bytes, instance_id: str | None = None) -> "Store":
        engine = create_engine(url)
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            await connection.run_sync(add_missing_columns)
        return cls(engine, SecretCipher(session_key), instance_id)

    async def close(self) -> None:
        await self.engine.dispose()
