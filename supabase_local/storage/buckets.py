"""The bucket endpoints: `/bucket` (list, create), `/bucket/{id}` (get, update, delete), `/bucket/{id}/empty`.

Each runs as the caller, so storage.buckets' RLS decides; with Supabase's defaults (RLS on, no policies) only the
service role manages buckets, and anyone else finds none ("Bucket not found") or is refused on create.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from supabase_local.storage.access import identify
from supabase_local.storage.context import StorageContext, read_json_object, record_to_wire
from supabase_local.storage.errors import (
    StorageError,
    bucket_already_exists,
    bucket_not_empty,
    invalid_request,
    no_such_bucket,
)
from supabase_local.storage.paths import check_bucket_id

BUCKET_COLUMNS = ("id, name, coalesce(owner_id, owner::text, '') AS owner, public, file_size_limit, "
                  "allowed_mime_types, created_at, updated_at")
_MIME_TYPE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&^_.+-*/")


def _options(payload: dict[str, Any]) -> dict[str, Any]:
    """The bucket options present in a create or update body, checked field by field."""
    options: dict[str, Any] = {}
    if "public" in payload:
        if not isinstance(payload["public"], bool):
            raise invalid_request("public must be true or false")
        options["public"] = payload["public"]
    if "file_size_limit" in payload:
        limit = payload["file_size_limit"]
        if isinstance(limit, str) and limit.isdigit():
            limit = int(limit)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise invalid_request("file_size_limit must be a whole number of bytes or null")
        options["file_size_limit"] = limit or None
    if "allowed_mime_types" in payload:
        types = payload["allowed_mime_types"]
        if types is not None and (not isinstance(types, list) or not all(
                isinstance(item, str) and item and "/" in item and set(item) <= _MIME_TYPE_CHARS for item in types)):
            raise invalid_request("allowed_mime_types must be a list of mime types such as image/png or image/*")
        options["allowed_mime_types"] = types or None
    return options


async def list_buckets(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    async with context.db.transaction(identity) as conn:
        rows = await conn.fetch(f"SELECT {BUCKET_COLUMNS} FROM storage.buckets ORDER BY name")
    return JSONResponse([record_to_wire(row) for row in rows])


async def get_bucket(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id = check_bucket_id(request.path_params["bucket"])
    async with context.db.transaction(identity) as conn:
        row = await conn.fetchrow(f"SELECT {BUCKET_COLUMNS} FROM storage.buckets WHERE id = $1", bucket_id)
    if row is None:
        raise no_such_bucket()
    return JSONResponse(record_to_wire(row))


async def create_bucket(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    payload = await read_json_object(request)
    name = payload.get("name")
    bucket_id = check_bucket_id(payload.get("id") or name)
    name = check_bucket_id(name or bucket_id)
    options = _options(payload)
    try:
        async with context.db.transaction(identity) as conn:
            await conn.execute(
                "INSERT INTO storage.buckets (id, name, owner, owner_id, public, file_size_limit, allowed_mime_types) "
                "VALUES ($1, $2, nullif($3, '')::uuid, nullif($3, ''), $4, $5, $6)",
                bucket_id, name, identity.subject, options.get("public", False), options.get("file_size_limit"),
                options.get("allowed_mime_types"))
    except StorageError as exc:
        if exc.code == "KeyAlreadyExists":
            raise bucket_already_exists() from exc
        raise
    return JSONResponse({"name": name})


async def update_bucket(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id = check_bucket_id(request.path_params["bucket"])
    options = _options(await read_json_object(request))
    assignments = ["updated_at = now()"] + [f"{column} = ${index}" for index, column in enumerate(options, start=2)]
    async with context.db.transaction(identity) as conn:
        status = await conn.execute(f"UPDATE storage.buckets SET {', '.join(assignments)} WHERE id = $1",
                                    bucket_id, *options.values())
    if status.endswith(" 0"):
        raise no_such_bucket()
    return JSONResponse({"message": "Successfully updated"})


async def empty_bucket(context: StorageContext, request: Request) -> JSONResponse:
    """Deletes the objects the caller may delete (RLS), then their files once the rows are gone."""
    identity = identify(context.verifier, request.headers)
    bucket_id = check_bucket_id(request.path_params["bucket"])
    async with context.db.transaction(identity) as conn:
        if await conn.fetchval("SELECT 1 FROM storage.buckets WHERE id = $1", bucket_id) is None:
            raise no_such_bucket()
        versions = await conn.fetch("DELETE FROM storage.objects WHERE bucket_id = $1 RETURNING version", bucket_id)
    context.files.remove(*(row["version"] for row in versions))
    return JSONResponse({"message": "Successfully emptied"})


async def delete_bucket(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id = check_bucket_id(request.path_params["bucket"])
    async with context.db.transaction(identity) as conn:
        if await conn.fetchval("SELECT 1 FROM storage.buckets WHERE id = $1", bucket_id) is None:
            raise no_such_bucket()
        # Objects the caller cannot see still keep the bucket: the foreign key counts every row.
        try:
            async with conn.transaction():
                status = await conn.execute("DELETE FROM storage.buckets WHERE id = $1", bucket_id)
        except Exception as exc:  # noqa: BLE001 - mapped just below; anything else re-raised
            if getattr(exc, "sqlstate", None) == "23503":
                raise bucket_not_empty() from exc
            raise
    if status.endswith(" 0"):
        raise no_such_bucket()
    return JSONResponse({"message": "Successfully deleted"})
