"""The gateway's one error type and the mapping of PostgreSQL errors to PostgREST's HTTP statuses.

Every failure leaves as PostgREST's JSON body `{code, message, details, hint}`, so supabase-py raises `APIError`
carrying the same code it would against hosted Supabase.
"""

from __future__ import annotations

import json
import logging

import asyncpg
from starlette.responses import Response

logger = logging.getLogger("supabase_local.rest")


class RestError(Exception):
    """A request failed: `status` is the HTTP status, `code` a SQLSTATE or a PostgREST `PGRSTxxx` code."""

    def __init__(self, status: int, code: str, message: str, details: str | None = None,
                 hint: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = headers or {}

    def body(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "details": self.details, "hint": self.hint}

    def response(self, include_body: bool = True) -> Response:
        content = json.dumps(self.body()) if include_body else b""
        return Response(content, status_code=self.status, headers=self.headers,
                        media_type="application/json; charset=utf-8")


def bad_query(message: str, details: str | None = None) -> RestError:
    """PGRST100: the query string could not be parsed."""
    return RestError(400, "PGRST100", message, details)


def bad_body(message: str) -> RestError:
    """PGRST102: the request body is not the JSON the operation needs."""
    return RestError(400, "PGRST102", message)


def payload_too_large(limit: int) -> RestError:
    """PGRST413, this gateway's own: PostgREST reads any body and leaves the limit to the gateway in front of it
    (hosted Supabase's allows 1 MB), which has no PostgREST code for it."""
    return RestError(413, "PGRST413", "Payload Too Large", f"The request body is larger than {limit} bytes",
                     "Send less at once, e.g. insert the rows in several requests")


def unknown_column(relation: str, column: str) -> RestError:
    return RestError(400, "42703", f"column {relation}.{column} does not exist")


def unknown_body_column(relation: str, column: str) -> RestError:
    return RestError(400, "PGRST204", f"Could not find the '{column}' column of '{relation}' in the schema cache")


def unknown_table(name: str) -> RestError:
    # The code older PostgREST (and the contract) uses; newer releases say PGRST205 with the same 404.
    return RestError(404, "42P01", f'relation "public.{name}" does not exist')


def singular_mismatch(rows: int) -> RestError:
    return RestError(406, "PGRST116", "Cannot coerce the result to a single JSON object",
                     f"The result contains {rows} rows")


def internal_error() -> RestError:
    return RestError(500, "PGRSTX00", "Internal server error")


# Statuses by SQLSTATE class, as PostgREST documents them; codes not covered here (mostly classes 22, 23 and 42,
# caused by what the client sent) are 400.
_EXACT_STATUS = {
    "23503": 409, "23505": 409, "25006": 405, "42883": 404, "42P01": 404, "42P17": 500,
    "53400": 500, "P0001": 400,
}
_CLASS_STATUS = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
    "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
    "P0": 500, "XX": 500,
}


def status_for_sqlstate(sqlstate: str, role: str) -> int:
    if sqlstate == "42501":
        # Insufficient privilege: an anonymous caller might succeed with a token, a known one would not.
        return 401 if role == "anon" else 403
    if sqlstate in _EXACT_STATUS:
        return _EXACT_STATUS[sqlstate]
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit() and 100 <= int(sqlstate[2:]) <= 599:
        return int(sqlstate[2:])  # RAISE ... USING ERRCODE = 'PT402' chooses the status, as in PostgREST
    return _CLASS_STATUS.get(sqlstate[:2], 400)


def from_postgres(exc: asyncpg.PostgresError, role: str) -> RestError:
    """PostgreSQL's message, detail and hint reach the client for errors it caused; server faults are logged only."""
    sqlstate = getattr(exc, "sqlstate", None) or "XX000"
    status = status_for_sqlstate(sqlstate, role)
    if status >= 500 and not sqlstate.startswith("PT"):
        logger.error("database error %s: %s", sqlstate, exc)
        return RestError(status, sqlstate, "Internal server error" if status == 500 else "Service unavailable")
    return RestError(status, sqlstate, getattr(exc, "message", None) or str(exc),
                     getattr(exc, "detail", None), getattr(exc, "hint", None))
