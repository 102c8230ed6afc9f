"""Brings a store made by an older crm_server up to the current tables: columns added since are added.

Only additive changes are made this way (a new column with a server default, or nullable), so an upgrade never
rewrites data; anything else would need a real migration tool.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect
from sqlalchemy.schema import CreateColumn

from crm_server.store.schema import metadata


def add_missing_columns(connection: Connection) -> list[str]:
    """ALTER TABLE … ADD COLUMN for each column of the schema its table lacks; returns `table.column` added."""
    inspector = inspect(connection)
    existing_tables = set(inspector.get_table_names())
    added = []
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue  # create_all makes it whole
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"{table.name}.{column.name} needs a server default to be added to old stores")
            ddl = CreateColumn(column).compile(dialect=connection.dialect)
            connection.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
            added.append(f"{table.name}.{column.name}")
    return added
