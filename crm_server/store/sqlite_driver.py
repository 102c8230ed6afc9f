"""The SQLite store's statements of every send (the Idempotency-Key claim, the known message and the completion),
run on aiosqlite's connection directly: compiled once by SQLAlchemy, executed with one thread hop each.

aiosqlite runs each call in its own thread, and SQLAlchemy's adapter makes four of them per statement (cursor,
execute, fetch, close) where aiosqlite's `execute_fetchall` makes one; with the commit that is 2 hops instead of 5
for a claim and 3 instead of 7 for the known message with the completion.

The connection is still checked out through the engine (the pool's one connection, queued in asyncio like every
other store call), and the transaction is always ended here: committed, or rolled back on any error; a check-in that
still finds one open rolls it back (`database.create_engine`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
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
