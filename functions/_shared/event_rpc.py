"""The one way an event handler calls its rpc (one round trip per webhook): the integration is re-checked inside
the database, and its PT404 (disabled or deleted since the key was looked up) becomes 404 like an unknown key.
"""

from __future__ import annotations

from typing import Any

from supabase import AsyncClient

from functions._shared.database import rpc_value
from functions._shared.errors import DatabaseError, IntegrationNotFoundError

INTEGRATION_GONE = "PT404"


async def event_rpc(db: AsyncClient, function: str, params: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        value = await rpc_value(db.rpc(function, params), what)
    except DatabaseError as exc:
        if exc.pg_code == INTEGRATION_GONE:
            raise IntegrationNotFoundError("Unknown or disabled webhook key") from exc
        raise
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        raise DatabaseError(f"The database answered {function} unexpectedly")
    return value
