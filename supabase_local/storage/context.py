"""What every Storage endpoint needs: the database as the caller, the files, the token verifier and the limits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request

from supabase_local.rest.auth import JwtVerifier
from supabase_local.storage.access import Database
from supabase_local.storage.errors import invalid_request
from supabase_local.storage.files import FileStore

# Storage's default global limit (FILE_SIZE_LIMIT) on hosted projects of the free plan: 50 MiB.
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# The JSON bodies of the non-upload endpoints (lists of paths at most).
MAX_JSON_BODY_BYTES = 1024 * 1024


@dataclass
class StorageContext:
    db: Database
    files: FileStore
    verifier: JwtVerifier
    jwt_secret: str
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES


async def read_json_object(request: Request) -> dict[str, Any]:
    """A small JSON object body (an empty body is `{}`), else a 400 saying so."""
    from safeguards.request_body import BodyTooLarge, read_body

    try:
        raw = await read_body(request, MAX_JSON_BODY_BYTES)
    except BodyTooLarge as exc:
        raise invalid_request(f"the JSON body is larger than {MAX_JSON_BODY_BYTES} bytes") from exc
    if not raw.strip():
        return {}
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise invalid_request("the body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise invalid_request("the body must be a JSON object")
    return payload


def wire_value(value: Any) -> Any:
    """A database value as Storage's JSON has it: timestamps in ISO 8601, jsonb parsed, uuids as text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)


def record_to_wire(record: Any, jsonb: tuple[str, ...] = ("metadata", "user_metadata")) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dict(record).items():
        if key in jsonb and isinstance(value, str):
            value = json.loads(value)
        out[key] = wire_value(value)
    return out
