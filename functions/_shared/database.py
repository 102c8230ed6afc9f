"""The one way the functions run a supabase-py query: its errors become `DatabaseError`, its rows plain dicts.

supabase-py raises postgrest's APIError for database errors and httpx errors for transport failures; both mean
the database could not answer, which the functions report as 5xx (a webhook sender then retries).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx
from postgrest.exceptions import APIError

from functions._shared.errors import DatabaseError

log = logging.getLogger("functions.database")

UNIQUE_VIOLATION = "23505"


class Executable(Protocol):
    async def execute(self) -> Any: ...


async def rows(query: Executable, what: str) -> list[dict[str, Any]]:
    """Run `query` and return its rows; `what` names the step in the error and the log."""
    try:
        response = await query.execute()
    except APIError as exc:
        log.warning("database error while %s: %s %s", what, exc.code, exc.message)
        raise DatabaseError(f"Database error while {what}", pg_code=exc.code) from exc
    except httpx.HTTPError as exc:
        log.warning("database unreachable while %s: %r", what, exc)
        raise DatabaseError(f"Database unreachable while {what}") from exc
    data = response.data if response is not None else None
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        # `Prefer: return=minimal` answers without a body.
        return []
    return data


async def first_row(query: Executable, what: str) -> dict[str, Any] | None:
    found = await rows(query, what)
    return found[0] if found else None


async def rpc_value(query: Executable, what: str) -> Any:
    """Run an rpc and return its JSON result as is (a scalar-returning function answers the bare value)."""
    try:
        response = await query.execute()
    except APIError as exc:
        log.warning("database error while %s: %s %s", what, exc.code, exc.message)
        raise DatabaseError(f"Database error while {what}", pg_code=exc.code) from exc
    except httpx.HTTPError as exc:
        log.warning("database unreachable while %s: %r", what, exc)
        raise DatabaseError(f"Database unreachable while {what}") from exc
    return response.data
