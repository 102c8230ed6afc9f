"""The store on both dialects it supports: SQLite (default) and PostgreSQL (several servers).

Keys hashed, secrets and sessions encrypted, leases exclusive until they expire, idempotency claims single-owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import event, func, select, update

from crm_server.keys import hash_key
from crm_server.store import Store
from crm_server.store.pending_logins import StoredLogin
from crm_server.store.schema import accounts, idempotency, instances, pending_logins, webhooks
from crm_server.store.webhooks import BatchSettings


async def _postgres_url(admin_url: str) -> str:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute("DROP DATABASE IF EXISTS crm_store_test")
        await connection.execute("CREATE DATABASE crm_store_test")
    finally:
        await connection.close()
    base, _ = admin_url.rsplit("/", 1)
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + "/crm_store_test"


@pytest.fixture(params=["sqlite", "postgresql"])
def dialect_admin_url(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite; the embedded PostgreSQL's admin URL (started once per test session) otherwise."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("local_database").admin_url)


@pytest.fixture
async def store(dialect_admin_url: str | None, tmp_path: Path) -> AsyncIterator[Store]:
    if dialect_admin_url is None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"
    else:
        url = await _postgres_url(dialect_admin_url)
    opened = await Store.open(url, Fernet.generate_key())
    yield opened
    await opened.close()


async def test_api_keys_authenticate_by_hash_and_carry_their_project(store: Store) -> None:
    assert not await store.api_keys.has_admin_key()
    project_key = await store.api_keys.create("org-1")
    admin_key = await store.api_keys.create(None)
    assert await store.api_keys.has_admin_key()
    principal = await store.api_keys.authenticate(project_key)
    assert principal is not None and principal.project_id == "org-1" and principal.key_hash == hash_key(project_key)
    admin = await store.api_keys.authenticate(admin_key)
    assert admin is not None and admin.is_admin
    assert await store.api_keys.authenticate(project_key + "x") is None


async def test_an_account_is_created_once_and_keeps_its_session_encrypted(store: Store) -> None:
    first = await store.accounts.ensure("org-1", "+15550001111")
    again = await store.accounts.ensure("org-1", "+15550001111")
    assert first == again and first.status == "auth_required"
    assert await store.accounts.acquire_lease("org-1", "+15550001111", "server-a", ttl=30)
    assert await store.accounts.save_session("org-1", "+15550001111", b'{"auth_key": "secret-material"}', "server-a")
    assert await store.accounts.load_session("org-1", "+15550001111") == b'{"auth_key": "secret-material"}'
    async with store.engine.connect() as connection:
        raw = await connection.scalar(select(accounts.c.session))
    assert b"secret-material" not in raw

    await store.accounts.mark_authorized("org-1", "+15550001111", 777, "me")
    record = await store.accounts.get("org-1", "+15550001111")
    assert record is not None and record.authorized and record.user_id == 777
    await store.accounts.mark_logged_out("org-1", "+15550001111")
    record = await store.accounts.get("org-1", "+15550001111")
    assert record is not None and record.status == "logged_out" and not record.authorized
    assert await store.accounts.load_session("org-1", "+15550001111") is None


async def test_a_lease_is_exclusive_until_it_expires(store: Store) -> None:
    await store.accounts.ensure("org-1", "+15550002222")
    assert await store.accounts.acquire_lease("org-1", "+15550002222", "server-a", ttl=30)
    assert not await store.accounts.acquire_lease("org-1", "+15550002222", "server-b", ttl=30)
    assert await store.accounts.acquire_lease("org-1", "+15550002222", "server-a", ttl=30)  # re-entrant
    assert await store.accounts.renew_leases("server-a", ttl=30) == {("org-1", "+15550002222")}
    assert await store.accounts.renew_leases("server-b", ttl=30) == set()

    async with store.engine.begin() as connection:  # server-a stops renewing...
        await connection.execute(update(accounts).values(lease_expires_at=time.time() - 1))
    assert await store.accounts.acquire_lease("org-1", "+15550002222", "server-b", ttl=30)
    assert await store.accounts.renew_leases("server-a", ttl=30) == set()  # ...and learns it lost it

    await store.accounts.release_lease("org-1", "+15550002222", "server-a")  # not its lease: no effect
    assert not await store.accounts.acquire_lease("org-1", "+15550002222", "server-a", ttl=30)
    await store.accounts.release_all_leases("server-b")
    assert await store.accounts.acquire_lease("org-1", "+15550002222", "server-a", ttl=30)


async def test_a_server_that_lost_the_lease_cannot_overwrite_the_session(store: Store) -> None:
    await store.accounts.ensure("org-1", "+15550006666")
    assert await store.accounts.acquire_lease("org-1", "+15550006666", "server-b", ttl=30)
    assert await store.accounts.save_session("org-1", "+15550006666", b"new owner's state", "server-b")
    assert not await store.accounts.save_session("org-1", "+15550006666", b"stale state", "server-a")
    assert await store.accounts.load_session("org-1", "+15550006666") == b"new owner's state"


async def test_only_authorized_accounts_nobody_else_holds_are_claimable(store: Store) -> None:
    for phone in ("+15550003331", "+15550003332", "+15550003333"):
        await store.accounts.ensure("org-1", phone)
    await store.accounts.mark_authorized("org-1", "+15550003331", 1, None)
    await store.accounts.mark_authorized("org-1", "+15550003332", 2, None)
    await store.accounts.acquire_lease("org-1", "+15550003332", "server-b", ttl=30)
    claimable = await store.accounts.list_claimable("server-a")
    assert [record.phone for record in claimable] == ["+15550003331"]
    assert {record.phone for record in await store.accounts.list_claimable("server-b")} == {
        "+15550003331",
        "+15550003332",
    }


async def test_an_idempotency_key_is_claimed_once_and_replays_the_first_response(store: Store) -> None:
    first = await store.idempotency.claim("org-1", "key-1")
    assert first.claimed
    in_flight = await store.idempotency.claim("org-1", "key-1")
    assert not in_flight.claimed and in_flight.response is None
    await store.idempotency.complete("org-1", "key-1", {"status": "sent", "message_id": 5})
    replay = await store.idempotency.claim("org-1", "key-1")
    assert not replay.claimed and replay.response == {"status": "sent", "message_id": 5}
    assert (await store.idempotency.claim("org-2", "key-1")).claimed  # keys are per project


async def test_a_released_or_expired_idempotency_key_can_be_claimed_again(store: Store) -> None:
    assert (await store.idempotency.claim("org-1", "key-2")).claimed
    await store.idempotency.release("org-1", "key-2")
    assert (await store.idempotency.claim("org-1", "key-2")).claimed
    await store.idempotency.complete("org-1", "key-2", {"status": "sent"})
    async with store.engine.begin() as connection:
        await connection.execute(update(idempotency).values(created_at=time.time() - 25 * 3600))
    assert (await store.idempotency.claim("org-1", "key-2")).claimed
    assert await store.idempotency.purge_expired() == 0


async def test_an_abandoned_claim_can_be_claimed_again_and_concurrent_claims_have_one_owner(store: Store) -> None:
    assert (await store.idempotency.claim("org-1", "key-3")).claimed
    async with store.engine.begin() as connection:
        await connection.execute(update(idempotency).where(idempotency.c.key == "key-3")
                                 .values(created_at=time.time() - 301))
    assert (await store.idempotency.claim("org-1", "key-3")).claimed  # its process died mid-send
    assert not (await store.idempotency.claim("org-1", "key-3")).claimed
    claims = await asyncio.gather(*(store.idempotency.claim("org-1", "key-4") for _ in range(8)))
    assert sum(claim.claimed for claim in claims) == 1


@contextlib.asynccontextmanager
async def statements_run(store: Store) -> AsyncIterator[list[str]]:
    """Every statement the database is sent meanwhile, BEGIN and COMMIT included: SQLite's own trace of its one
    connection (the store runs a send's statements on the driver there), PostgreSQL's from SQLAlchemy's events."""
    statements: list[str] = []
    if store.engine.dialect.name == "sqlite":
        async with store.engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            await driver.set_trace_callback(statements.append)
        try:
            yield statements
        finally:
            await driver.set_trace_callback(None)
        return

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    def committed(connection: object) -> None:
        statements.append("COMMIT")

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    event.listen(store.engine.sync_engine, "commit", committed)
    try:
        yield statements
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)
        event.remove(store.engine.sync_engine, "commit", committed)


def data_statements(statements: list[str]) -> list[str]:
    return [sql for sql in statements if sql.strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]


async def test_claiming_and_completing_a_key_are_one_statement_each(store: Store) -> None:
    async with statements_run(store) as statements:
        for _ in range(2):  # the owner's claim, then a concurrent request's
            await store.idempotency.claim("org-1", "key-5")
        await store.idempotency.complete("org-1", "key-5", {"status": "sent"})
        replay = await store.idempotency.claim("org-1", "key-5")
    assert replay.response == {"status": "sent"}
    assert len(data_statements(statements)) == 4, statements


async def test_a_send_is_remembered_and_its_key_completed_in_one_transaction(store: Store) -> None:
    assert (await store.idempotency.claim("org-1", "key-6")).claimed
    async with statements_run(store) as statements:
        await store.record_send("org-1", "+15550001111", 21, 43, ("key-6", {"status": "sent", "message_id": 21}))
    assert len(data_statements(statements)) == 2 and statements.count("COMMIT") == 1, statements
    assert (await store.idempotency.claim("org-1", "key-6")).response == {"status": "sent", "message_id": 21}
    assert (await store.known_messages.lookup("org-1", "+15550001111", [21]))[21].sent

    # One transaction: a completion that cannot be stored takes the remembered message with it.
    assert (await store.idempotency.claim("org-1", "key-7")).claimed
    with pytest.raises(TypeError):
        await store.record_send("org-1", "+15550001111", 22, 43, ("key-7", {"unstorable": object()}))
    assert await store.known_messages.lookup("org-1", "+15550001111", [22]) == {}
    await store.record_send("org-1", "+15550001111", 23, 43)  # a send without a key only remembers
    assert (await store.known_messages.lookup("org-1", "+15550001111", [23]))[23].sent


async def test_an_outbox_group_commit_returns_only_new_rows_in_order_past_one_statements_parameters(
        store: Store) -> None:
    """The listener's group commit: on SQLite a few multi-row INSERTs on the driver (crm_server.store.sqlite_driver.
    DriverInsert), as many statements as SQLite's 32,766 parameters need; the same rows either way."""
    from crm_server.store.outbox import Lane, OutboxEvent
    from crm_server.store.schema import known_messages, outbox

    def events(ids: range) -> list[OutboxEvent]:
        return [OutboxEvent(event_id=f"evt_{i}", project_id="org-1", phone="+15550001111", chat_id=str(i % 3),
                            message_id=i, payload={"type": "message", "text": f"m{i}"}, known_message=i % 2 == 0)
                for i in ids]

    await store.outbox.insert(events(range(0, 3000, 3)))  # chat 0's rows are there already (a redelivery)
    until = time.time() + 60
    async with statements_run(store) as statements:
        new = await store.outbox.insert(events(range(3000)), {Lane("org-1", "+15550001111", "1"): ("me", until)})
    assert [row.message_id for row in new] == [i for i in range(3000) if i % 3], "new rows, in their order"
    assert all(row.body == f'{{"type":"message","text":"m{row.message_id}"}}'.encode() for row in new)
    if store.engine.dialect.name == "sqlite":
        # 3,000 rows of 12 columns: two statements; the known messages: one; one commit.
        assert len(data_statements(statements)) == 3 and statements.count("COMMIT") == 1, len(statements)
    async with store.engine.connect() as connection:
        stored = {row.id: row for row in await connection.execute(select(outbox))}
        known = (await connection.execute(select(func.count()).select_from(known_messages))).scalar_one()
    assert len(stored) == 3000 and known == 1500
    assert all(stored[row.id].event_id == row.event_id for row in new)
    assert {(row.chat_id, row.lease_owner) for row in stored.values()} == {("0", None), ("1", "me"), ("2", None)}
    assert {row.state for row in stored.values()} == {"pending"}

    # The delivered recorder's write: one statement on SQLite whatever the number of rows, only those rows.
    posted = [row.id for row in new[:1500]]
    async with statements_run(store) as statements:
        await store.outbox.mark_delivered(posted, 202, now=until)
    if store.engine.dialect.name == "sqlite":
        assert len(data_statements(statements)) == 1 and statements.count("COMMIT") == 1, statements
    async with store.engine.connect() as connection:
        after = {row.id: row for row in await connection.execute(select(outbox))}
    delivered = {row_id for row_id, row in after.items() if row.state == "delivered"}
    assert delivered == set(posted)
    assert all((after[i].attempts, after[i].last_status, after[i].first_attempt_at, after[i].delivered_at,
                after[i].lease_owner) == (1, 202, until, until, None) for i in posted)
    assert all(row.attempts == 0 for row_id, row in after.items() if row_id not in delivered)


async def test_the_servers_store_log_is_checkpointed_off_its_connection(tmp_path: Path) -> None:
    """With background checkpoints (the server), no commit of the store's connection copies the log into the
    database file until the log is ten times SQLite's default: a `WalCheckpointer` of its own does."""
    from crm_server.store.outbox import OutboxEvent
    from crm_server.store.wal_checkpoints import WRITER_PAGES

    def events(start: int) -> list[OutboxEvent]:
        return [OutboxEvent(event_id=f"evt_{i}", project_id="org-1", phone="+15550001111", chat_id="1",
                            message_id=i, payload={"type": "message", "text": "x" * 1000})
                for i in range(start, start + 500)]

    for background in (False, True):
        path = tmp_path / f"crm-{background}.sqlite3"
        store = await Store.open(f"sqlite+aiosqlite:///{path}", Fernet.generate_key(),
                                 background_checkpoints=background)
        try:
            async with store.engine.connect() as connection:
                pages = (await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one()
            assert pages == (WRITER_PAGES if background else 1000)
            assert (store.checkpointer is not None) is background
            if store.checkpointer is not None:
                await store.checkpointer.stop()  # held, to see that the writer leaves the log alone meanwhile
            size = path.stat().st_size
            for start in range(0, 3000, 500):  # ~3.5 MB of log: past SQLite's default of 1,000 pages
                await store.outbox.insert(events(start))
            grown = path.stat().st_size > size + 2_000_000
            assert grown is not background, "the writer checkpointed the log itself only without background ones"
            if store.checkpointer is not None:
                store.checkpointer.start()
                deadline = time.monotonic() + 10
                while path.stat().st_size <= size + 2_000_000:
                    assert time.monotonic() < deadline, "the checkpointer never moved the log into the database"
                    await asyncio.sleep(0.05)
                assert store.checkpointer.checkpoints >= 1
        finally:
            await store.close()


async def test_no_store_call_leaves_a_transaction_open_for_the_next_one(tmp_path: Path) -> None:
    """The SQLite store does not roll back on every check-in (a thread hop each time): each use must end its own
    transaction, which a reset listener ahead of the store's own sees at every check-in."""
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}", Fernet.generate_key())
    seen: list[bool] = []

    def record(dbapi_connection: Any, _record: Any, _state: object) -> None:
        seen.append(dbapi_connection.driver_connection.in_transaction)

    event.listen(store.engine.sync_engine, "reset", record, insert=True)
    try:
        await store.api_keys.authenticate(await store.api_keys.create("org-1"))
        await store.accounts.ensure("org-1", "+15550001111")
        await store.accounts.get("org-1", "+15550001111")
        await store.webhooks.upsert("org-1", "+15550001111", "https://a.example/h", "a-secret-1")
        await store.webhooks.get("org-1", "+15550001111")
        assert (await store.idempotency.claim("org-1", "key-1")).claimed
        await store.record_send("org-1", "+15550001111", 7, 42, ("key-1", {"status": "sent"}))
        assert (await store.idempotency.claim("org-1", "key-2")).claimed
        await store.idempotency.release("org-1", "key-2")
        await store.known_messages.lookup("org-1", "+15550001111", [7])
        await store.idempotency.purge_expired()
        with pytest.raises(ValueError):  # a failure inside a transaction
            async with store.engine.begin() as connection:
                await connection.execute(update(accounts).values(updated_at=time.time()))
                raise ValueError("fails mid-transaction")
        async with store.engine.connect() as connection:  # written, never committed
            await connection.execute(update(accounts).values(updated_at=0.0))
        assert seen and not any(seen), seen

        # Should one ever be left open (a driver call outside a Connection), the check-in still rolls it back.
        seen.clear()
        async with store.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            await raw.driver_connection.execute("UPDATE accounts SET updated_at = 1.0")
        assert seen == [True]
        async with store.engine.connect() as connection:
            assert not (await connection.get_raw_connection()).driver_connection.in_transaction
            assert 1.0 not in (await connection.execute(select(accounts.c.updated_at))).scalars().all()
    finally:
        event.remove(store.engine.sync_engine, "reset", record)
        await store.close()


async def test_webhooks_upsert_per_account_with_the_secret_encrypted(store: Store) -> None:
    await store.webhooks.upsert("org-1", "+15550004444", "https://a.example/h", "first-secret")
    await store.webhooks.upsert("org-1", "+15550004444", "https://b.example/h", "second-secret")
    webhook = await store.webhooks.get("org-1", "+15550004444")
    assert webhook is not None and webhook.url == "https://b.example/h" and webhook.secret == "second-secret"
    assert {phone: status.url for phone, status in (await store.webhooks.statuses("org-1")).items()} == {
        "+15550004444": "https://b.example/h"}
    async with store.engine.connect() as connection:
        raw = await connection.scalar(select(webhooks.c.secret))
    assert b"second-secret" not in raw
    await store.webhooks.delete("org-1", "+15550004444")
    assert await store.webhooks.get("org-1", "+15550004444") is None


async def test_a_webhooks_batching_is_kept_when_not_named_and_turned_off_by_none(store: Store) -> None:
    account = ("org-1", "+15550004545")
    assert await store.webhooks.upsert(*account, "https://a.example/h", "a-secret") is None  # new: unbatched
    batch = BatchSettings(max_events=100, max_wait_ms=250)
    assert await store.webhooks.upsert(*account, "https://a.example/h", "a-secret", batch=batch) == batch
    assert await store.webhooks.upsert(*account, "https://b.example/h", "a-secret") == batch  # not named: kept
    webhook = await store.webhooks.get(*account)
    assert webhook is not None and webhook.batch == batch and webhook.url == "https://b.example/h"
    assert (await store.webhooks.statuses("org-1"))[account[1]].batch == batch
    assert await store.webhooks.upsert(*account, "https://b.example/h", "a-secret", batch=None) is None
    webhook = await store.webhooks.get(*account)
    assert webhook is not None and webhook.batch is None


async def test_a_store_opened_with_another_key_cannot_read_sessions(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"
    first = await Store.open(url, Fernet.generate_key())
    await first.accounts.ensure("org-1", "+15550005555")
    await first.accounts.acquire_lease("org-1", "+15550005555", "server-a", ttl=30)
    await first.accounts.save_session("org-1", "+15550005555", b"session", "server-a")
    await first.close()
    second = await Store.open(url, Fernet.generate_key())
    try:
        with pytest.raises(ValueError, match="CRM_SESSION_KEY"):
            await second.accounts.load_session("org-1", "+15550005555")
    finally:
        await second.close()


async def test_webhook_statuses_carry_each_accounts_delivery_health_in_one_query(store: Store) -> None:
    from sqlalchemy import event

    from crm_server.store import OutboxState
    from crm_server.store.outbox import OutboxEvent

    await store.webhooks.upsert("org-1", "+15550001111", "https://a.example/h", "secret-a")
    await store.webhooks.upsert("org-1", "+15550002222", "https://b.example/h", "secret-b")
    await store.webhooks.upsert("org-2", "+15550001111", "https://c.example/h", "secret-c")
    rows = await store.outbox.insert([
        OutboxEvent(f"evt-{project}-{phone}-{n}", project, phone, "7", n, {"n": n})
        for project, phone, count in (("org-1", "+15550001111", 4), ("org-2", "+15550001111", 2))
        for n in range(1, count + 1)
    ])
    first, second, third = rows[0], rows[1], rows[2]
    await store.outbox.mark_delivered([first.id], 200, now=1000.0)
    await store.outbox.mark_failed_attempt(second, dead=True, next_attempt_at=0, status=400, error="bad", now=1001.0)
    await store.outbox.mark_failed_attempt(third, dead=False, next_attempt_at=0, status=503, error="later", now=1002.0)

    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731 (before_cursor_execute: statement is 3rd)
    event.listen(store.engine.sync_engine, "before_cursor_execute", listener)
    try:
        statuses = await store.webhooks.statuses("org-1")
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", listener)
    assert len(statements) == 1

    busy, idle = statuses["+15550001111"], statuses["+15550002222"]
    assert (busy.url, busy.enabled) == ("https://a.example/h", True)
    assert (busy.health.pending, busy.health.dead, busy.health.last_success_at) == (2, 1, 1000.0)
    assert busy.health.last_error == "later"  # the newest error of a row not delivered
    assert (idle.health.pending, idle.health.dead, idle.health.last_success_at, idle.health.last_error) == (
        0, 0, None, None)
    assert set(await store.webhooks.statuses("org-1", "+15550002222")) == {"+15550002222"}
    assert (await store.webhooks.statuses("org-2"))["+15550001111"].health.pending == 2  # per project
    assert (await store.outbox.list("org-1", OutboxState.DEAD))[0].state is OutboxState.DEAD


async def test_a_store_made_before_a_column_existed_gets_it_with_its_default(
        dialect_admin_url: str | None, tmp_path: Path) -> None:
    from sqlalchemy import text

    from crm_server.store.cipher import SecretCipher
    from crm_server.store.database import create_engine

    key = Fernet.generate_key()
    url = (f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}" if dialect_admin_url is None
           else await _postgres_url(dialect_admin_url))
    engine = create_engine(url)
    async with engine.begin() as connection:  # the webhooks table as crm_server made it before `paused`
        await connection.execute(text(
            "CREATE TABLE webhooks (id INTEGER PRIMARY KEY, project_id VARCHAR(128) NOT NULL, phone VARCHAR(32) NOT NULL,"
            " url TEXT NOT NULL, secret BYTEA NOT NULL, enabled BOOLEAN NOT NULL, created_at FLOAT NOT NULL,"
            " updated_at FLOAT NOT NULL, CONSTRAINT uq_webhooks_project_phone UNIQUE (project_id, phone))"
            .replace("BYTEA", "BLOB" if dialect_admin_url is None else "BYTEA")))
        await connection.execute(text(
            "INSERT INTO webhooks (id, project_id, phone, url, secret, enabled, created_at, updated_at)"
            " VALUES (1, 'org-1', '+15550009999', 'https://a.example/h', :secret, true, 0, 0)"),
            {"secret": SecretCipher(key).encrypt(b"old-secret")})
    await engine.dispose()
    store = await Store.open(url, key)
    try:
        webhook = await store.webhooks.get("org-1", "+15550009999")
        assert webhook is not None and webhook.paused is False
        assert webhook.events == ("message",)  # registered before event types: what it always received
        assert webhook.batch is None  # registered before batching: one event per POST
        assert await store.webhooks.set_paused("org-1", "+15550009999", True)
    finally:
        await store.close()


async def test_known_messages_come_with_the_outbox_insert_and_with_sends(dialect_admin_url: str | None,
                                                                         tmp_path: Path) -> None:
    from crm_server.store.outbox import OutboxEvent

    url = (f"sqlite+aiosqlite:///{tmp_path / 'known.sqlite3'}" if dialect_admin_url is None
           else await _postgres_url(dialect_admin_url))
    store = await Store.open(url, Fernet.generate_key())
    try:
        event = OutboxEvent(event_id="evt_1", project_id="org-1", phone="+15550001111", chat_id="42", message_id=7,
                            payload={"type": "message"}, known_message=True)
        other = OutboxEvent(event_id="evt_2", project_id="org-1", phone="+15550001111", chat_id="42",
                            message_id=-5, payload={"type": "message.read"})
        await store.outbox.insert([event, other])
        await store.outbox.insert([event])  # a redelivered message: no second row anywhere
        await store.known_messages.remember_sent("org-1", "+15550001111", 8, 43)
        await store.known_messages.remember_sent("org-1", "+15550001111", 8, 43)
        await store.webhooks.upsert("org-1", "+15550001111", "https://a.example/h", "a-secret-1",
                                    events=("message", "message.read"))
        await store.webhooks.upsert("org-1", "+15550001111", "https://a.example/h", "a-secret-1")  # kept
        assert (await store.webhooks.get("org-1", "+15550001111")).events == ("message", "message.read")
        known = await store.known_messages.lookup("org-1", "+15550001111", [7, 8, -5, 9])
        assert {i: (k.chat_id, k.sent) for i, k in known.items()} == {7: ("42", False), 8: ("43", True)}
        assert await store.known_messages.lookup("org-2", "+15550001111", [7]) == {}
        assert await store.known_messages.purge(time.time() + 1) == 2
    finally:
        await store.close()


async def test_history_jobs_keep_their_progress_and_known_messages_give_each_chats_last_id(
        store: Store) -> None:
    from crm_server.store.history_jobs import DONE, DialogProgress, HistoryJob
    from crm_server.store.outbox import OutboxEvent

    job = HistoryJob(job_id="hist_1", project_id="org-1", phone="+15550001111", per_chat=50, since=1.0)
    await store.history_jobs.create(job)
    job.progress[42] = DialogProgress(last_id=17, count=10)
    job.progress[43] = DialogProgress(last_id=30, count=50, finished=True)
    job.dialogs, job.messages = 1, 60
    await store.history_jobs.save(job)
    loaded = await store.history_jobs.get("hist_1")
    assert loaded is not None and loaded.state == "running" and (loaded.dialogs, loaded.messages) == (1, 60)
    assert loaded.progress == {42: DialogProgress(17, 10, False), 43: DialogProgress(30, 50, True)}
    loaded.state = DONE
    await store.history_jobs.save(loaded)
    assert [j.state for j in await store.history_jobs.of_account("org-1", "+15550001111")] == ["done"]
    assert await store.history_jobs.of_account("org-2", "+15550001111") == []
    assert await store.history_jobs.get("hist_2") is None

    events = [OutboxEvent(event_id=f"evt_{i}", project_id="org-1", phone="+15550001111", chat_id=chat,
                          message_id=i, payload={"type": "message"}, known_message=True)
              for i, chat in ((5, "42"), (9, "42"), (7, "43"))]
    # The same fact twice in one batch (a live message and its fetched twin) is one row.
    assert len(await store.outbox.insert([*events, events[0]])) == 3
    await store.known_messages.remember_sent("org-1", "+15550001111", 11, 43)
    assert await store.known_messages.last_ids("org-1", "+15550001111") == {42: 9, 43: 11}
    assert await store.known_messages.last_ids("org-1", "+15550001111", before=0.0) == {}
    assert await store.known_messages.last_ids("org-2", "+15550001111") == {}


async def test_instances_live_while_they_beat_and_leave_the_share_when_stopping(store: Store) -> None:
    await store.instances.heartbeat("crm-a", "http://127.0.0.1:9001")
    await store.instances.heartbeat("crm-b", "http://127.0.0.1:9002")
    assert [instance.instance_id for instance in await store.instances.live(ttl=30)] == ["crm-a", "crm-b"]
    await store.instances.mark_stopping("crm-b")
    assert [instance.instance_id for instance in await store.instances.live(ttl=30)] == ["crm-a"]
    # A restarted process at crm-a's address finds crm-a as its (dead) predecessor.
    assert await store.instances.others_at("http://127.0.0.1:9001", "crm-c") == ["crm-a"]
    async with store.engine.begin() as connection:
        await connection.execute(update(instances).values(heartbeat_at=time.time() - 60))
    assert await store.instances.live(ttl=30) == []
    record = await store.instances.get("crm-a")
    assert record is not None and record.url == "http://127.0.0.1:9001"
    await store.instances.remove("crm-a")
    assert await store.instances.get("crm-a") is None


async def test_a_pending_login_is_stored_encrypted_and_expires(store: Store) -> None:
    login = StoredLogin(phone_code_hash="hash-123", password_required=False, session='{"v": 1, "auth": "KEY-XYZ"}',
                        expires_at=time.time() + 60)
    await store.pending_logins.save("org-1", "+15550001", login)
    assert await store.pending_logins.load("org-1", "+15550001") == login
    async with store.engine.connect() as connection:
        raw = await connection.scalar(select(pending_logins.c.login))
    assert b"hash-123" not in raw and b"KEY-XYZ" not in raw
    await store.pending_logins.save("org-1", "+15550001", StoredLogin(
        phone_code_hash="hash-123", password_required=True, session=login.session, expires_at=time.time() - 1))
    assert await store.pending_logins.load("org-1", "+15550001") is None  # expired
    await store.pending_logins.purge_expired()
    async with store.engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(pending_logins)) == 0


async def test_the_holders_live_state_is_written_only_while_it_holds_the_lease(store: Store) -> None:
    await store.accounts.ensure("org-1", "+15550002")
    assert await store.accounts.acquire_lease("org-1", "+15550002", "crm-a", ttl=30)
    await store.accounts.set_runtime_state("org-1", "+15550002", "crm-a", "connected")
    await store.accounts.set_runtime_state("org-1", "+15550002", "crm-b", "disconnected")  # not the holder
    record = await store.accounts.by_phone("+15550002")
    assert record is not None and record.runtime_state == "connected" and record.project_id == "org-1"
