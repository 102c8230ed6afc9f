"""The SQLite store's statements of every send (the Idempotency-Key claim, the known message and the completion) and
of the outbox's group commit, run on aiosqlite's connection directly: compiled once, executed with one thread hop
each.

aiosqlite runs each call in its own thread, and SQLAlchemy's adapter makes four of them per statement (cursor,
execute, fetch, close) where aiosqlite's `execute_fetchall` makes one; with the commit that is 2 hops instead of 5
for a claim and 3 instead of 7 for the known message with the completion.

The connection is still checked out through the engine (the pool's one connection, queued in asyncio like every
other store call), and the transaction is always ended here: committed, or rolled back on any error; a check-in that
still finds one open rolls it back (`database.create_engine`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine


class DriverStatement:
    """A statement compiled once for the engine's SQLite dialect: its SQL and its parameters in their order."""

    def __init__(self, engine: AsyncEngine, statement: Any) -> None:
        self._compiled = statement.compile(dialect=engine.dialect)
        self.sql = str(self._compiled)
        names = self._compiled.positiontup
        if names is None:
            raise RuntimeError("the SQLite dialect no longer compiles positional parameters")
        self._names: tuple[str, ...] = tuple(names)

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The bind values in the SQL's order (the statement's own constants filled in by SQLAlchemy)."""
        bound = self._compiled.construct_params(dict(values))
        return tuple(bound[name] for name in self._names)


@contextlib.asynccontextmanager
async def driver_transaction(engine: AsyncEngine) -> AsyncIterator[Any]:
    """The store's aiosqlite connection for one transaction: committed when the block ends, rolled back if it
    raises."""
    async with engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        try:
            yield driver
        except BaseException:
            await driver.rollback()
            raise
        await driver.commit()


async def run(driver: Any, statement: DriverStatement, values: Mapping[str, Any]) -> list[Any]:
    """One statement, one thread hop: its rows (none for a write without RETURNING)."""
    return list(await driver.execute_fetchall(statement.sql, statement.parameters(values)))


# SQLite binds at most 32,766 parameters in one statement (SQLITE_MAX_VARIABLE_NUMBER since 3.32).
MAX_PARAMETERS = 32_766


class DriverInsert:
    """`INSERT … VALUES (…), (…) ON CONFLICT (…) DO NOTHING [RETURNING …]` of many rows in one statement and one
    thread hop, its SQL written once per row count.

    What SQLAlchemy's "insertmanyvalues" sends for an executemany with RETURNING, without its four hops per statement
    (the outbox's group commit: crm_server.store.outbox.OutboxTable.insert). The columns are named here, so a row
    leaves every other column to its SQL default, as the engine's INSERT of the same values does."""

    def __init__(self, engine: AsyncEngine, table: Any, columns: Sequence[str], conflict: Sequence[str],
                 returning: Sequence[str] = ()) -> None:
        quote = engine.dialect.identifier_preparer.quote
        self.columns = tuple(columns)
        self._head = f"INSERT INTO {quote(table.name)} ({', '.join(map(quote, self.columns))}) VALUES "
        self._row = "(" + ", ".join("?" * len(self.columns)) + ")"
        self._tail = f" ON CONFLICT ({', '.join(map(quote, conflict))}) DO NOTHING"
        if returning:
            self._tail += f" RETURNING {', '.join(map(quote, returning))}"
        self._rows_per_statement = MAX_PARAMETERS // len(self.columns)
        self._sql: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        sql = self._sql.get(rows)
        if sql is None:
            sql = self._sql[rows] = self._head + ", ".join([self._row] * rows) + self._tail
        return sql

    async def run(self, driver: Any, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Insert `rows` (each a mapping with every column); the RETURNING rows of those inserted."""
        returned: list[Any] = []
        for start in range(0, len(rows), self._rows_per_statement):
            chunk = rows[start:start + self._rows_per_statement]
            parameters = [row[name] for row in chunk for name in self.columns]
            returned.extend(await driver.execute_fetchall(self.sql(len(chunk)), parameters))
        return returned
