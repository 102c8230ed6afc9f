"""The one place the store branches on SQL dialect: upserts (INSERT ... ON CONFLICT)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.schema import Table


def insert_for(engine: AsyncEngine, table: Table) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing/do_update (same spelling on both)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
