"""The gateway's kept connections: a healthy one is handed out again, anything doubtful goes back to the pool to be
reset or replaced, at most `keep` are kept, and closing hands them all back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from supabase_local.database import DatabaseUrls
from supabase_local.rest.connections import KeptConnections


@pytest.fixture
async def pool(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(database_urls.admin, min_size=3, max_size=3)
    assert created is not None
    yield created
    await created.close()


async def test_a_healthy_connection_is_handed_out_again_without_the_pool(pool: asyncpg.Pool) -> None:
    kept = KeptConnections(pool, keep=2)
    connection = await kept.acquire()
    backend = await connection.fetchval("SELECT pg_backend_pid()")
    await kept.release(connection, healthy=True)
    assert pool.get_idle_size() == 2  # still checked out of the pool, kept here
    again = await kept.acquire()
    assert again is connection and await again.fetchval("SELECT pg_backend_pid()") == backend
    await kept.release(again, healthy=True)
    await kept.close()
    assert pool.get_idle_size() == 3


async def test_a_failed_request_or_an_open_transaction_sends_the_connection_back_to_the_pool(
        pool: asyncpg.Pool) -> None:
    kept = KeptConnections(pool, keep=2)
    failed = await kept.acquire()
    await kept.release(failed, healthy=False)
    assert pool.get_idle_size() == 3

    in_transaction = await kept.acquire()
    await in_transaction.execute("BEGIN")
    await in_transaction.execute("CREATE TEMPORARY TABLE left_open (id int)")
    await kept.release(in_transaction, healthy=True)
    assert pool.get_idle_size() == 3  # the pool rolled it back
    connection = await kept.acquire()
    assert await connection.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    await kept.release(connection, healthy=True)
    await kept.close()


async def test_a_connection_that_died_while_kept_is_replaced(pool: asyncpg.Pool) -> None:
    kept = KeptConnections(pool, keep=2)
    connection = await kept.acquire()
    await kept.release(connection, healthy=True)
    connection.terminate()  # as a PostgreSQL restart leaves it
    replacement = await kept.acquire()
    assert replacement is not connection and await replacement.fetchval("SELECT 1") == 1
    await kept.release(replacement, healthy=True)
    await kept.close()


async def test_at_most_keep_are_kept_so_the_pool_always_has_one_for_others(pool: asyncpg.Pool) -> None:
    kept = KeptConnections(pool, keep=2)
    connections = [await kept.acquire() for _ in range(3)]
    for connection in connections:
        await kept.release(connection, healthy=True)
    assert pool.get_idle_size() == 1
    async with pool.acquire() as other:  # e.g. the schema cache reloading
        assert await other.fetchval("SELECT 1") == 1
    await kept.close()
    assert pool.get_idle_size() == 3
