"""The object endpoints: upload, download (as the caller, public, signed), sign, list, info, move, copy, remove.

Reads, lists and signing select from storage.objects as the caller; uploads insert (upsert: and update), moves
update, removals delete: the RLS policies on storage.objects decide each, as in Supabase Storage. Bytes and rows
never disagree: a write's bytes are complete in their own file before its row names them, and the file a row
stopped naming is removed only after that row committed.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from supabase_local.rest.auth import Identity
from supabase_local.storage.access import SERVICE, identify
from supabase_local.storage.context import StorageContext, read_json_object, record_to_wire
from supabase_local.storage.errors import (
    access_denied,
    invalid_mime_type,
    invalid_request,
    no_such_bucket,
    no_such_key,
)
from supabase_local.storage.files import stream_file
from supabase_local.storage.paths import check_bucket_id, check_object_name, check_prefix
from supabase_local.storage.signing import parse_expires_in, sign_object_url, verify_object_token
from supabase_local.storage.uploads import receive_upload

MAX_PATHS_PER_REQUEST = 1000
LIST_COLUMNS = {"name", "created_at", "updated_at", "last_accessed_at"}
NOT_ACCESSIBLE = "Either the object does not exist or you do not have access to it"


def _target(request: Request) -> tuple[str, str]:
    return check_bucket_id(request.path_params["bucket"]), check_object_name(request.path_params["path"])


def _upsert_requested(request: Request) -> bool:
    return request.method == "PUT" or request.headers.get("x-upsert", "").strip().lower() == "true"


def _mime_allowed(mime_type: str, allowed: list[str] | None) -> bool:
    if not allowed:
        return True
    essence = mime_type.split(";", 1)[0].strip().lower()
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == essence or (pattern.endswith("/*") and essence.startswith(pattern[:-1])):
            return True
    return False


# -- upload --------------------------------------------------------------------------------------------------

async def upload_object(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id, name = _target(request)
    upsert = _upsert_requested(request)
    # Storage reads the bucket's limits with its own rights: a caller who may not see the bucket still uploads.
    async with context.db.transaction(SERVICE) as conn:
        bucket = await conn.fetchrow(
            "SELECT file_size_limit, allowed_mime_types FROM storage.buckets WHERE id = $1", bucket_id)
    if bucket is None:
        raise no_such_bucket()
    limit = min(context.max_upload_bytes, bucket["file_size_limit"] or context.max_upload_bytes)
    pending = context.files.begin()
    version: str | None = None
    try:
        upload = await receive_upload(request, pending, limit)
        if not _mime_allowed(upload.content_type, bucket["allowed_mime_types"]):
            raise invalid_mime_type(upload.content_type)
        metadata = {
            "eTag": pending.etag, "size": pending.size, "mimetype": upload.content_type,
            "cacheControl": upload.cache_control or "no-cache",
            "lastModified": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "contentLength": pending.size, "httpStatusCode": 200,
        }
        version = await anyio.to_thread.run_sync(context.files.keep, pending)
        object_id, replaced = await _store_row(context, identity, bucket_id, name, version, metadata,
                                               upload.user_metadata, upsert)
    except BaseException:
        context.files.discard(pending)
        context.files.remove(version)
        raise
    context.files.remove(replaced)
    return JSONResponse({"Id": object_id, "Key": f"{bucket_id}/{name}"})


async def _store_row(context: StorageContext, identity: Identity, bucket_id: str, name: str, version: str,
                     metadata: dict[str, Any], user_metadata: dict[str, Any] | None,
                     upsert: bool) -> tuple[str, str | None]:
    """Insert the row (or, for an upsert of an existing name, point it at the new version): (id, replaced version)."""
    metadata_json = json.dumps(metadata)
    user_metadata_json = json.dumps(user_metadata) if user_metadata is not None else None
    async with context.db.transaction(identity) as conn:
        if not upsert:
            object_id = await conn.fetchval(
                "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, user_metadata, version) "
                "VALUES ($1, $2, nullif($3, '')::uuid, nullif($3, ''), $4::jsonb, $5::jsonb, $6) RETURNING id",
                bucket_id, name, identity.subject, metadata_json, user_metadata_json, version)
            return str(object_id), None
        object_id = await conn.fetchval(
            "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, user_metadata, version) "
            "VALUES ($1, $2, nullif($3, '')::uuid, nullif($3, ''), $4::jsonb, $5::jsonb, $6) "
            "ON CONFLICT (bucket_id, name) DO NOTHING RETURNING id",
            bucket_id, name, identity.subject, metadata_json, user_metadata_json, version)
        if object_id is not None:
            return str(object_id), None
        # The name exists: overwriting it is an UPDATE, which the update policies (and select, to find it) allow.
        row = await conn.fetchrow(
            "UPDATE storage.objects AS o SET metadata = $3::jsonb, user_metadata = $4::jsonb, version = $5, "
            "updated_at = now(), last_accessed_at = now() "
            "FROM (SELECT id, version FROM storage.objects WHERE bucket_id = $1 AND name = $2 FOR UPDATE) AS old "
            "WHERE o.id = old.id RETURNING o.id, old.version AS replaced",
            bucket_id, name, metadata_json, user_metadata_json, version)
        if row is None:
            raise access_denied()
        return str(row["id"]), row["replaced"]


# -- download ------------------------------------------------------------------------------------------------

async def download_object(context: StorageContext, request: Request) -> Response:
    """`GET /object/{bucket}/{path}` and `/object/authenticated/...`: what the caller's select policies let it read."""
    identity = identify(context.verifier, request.headers)
    bucket_id, name = _target(request)
    return await _serve(context, request, identity, bucket_id, name)


async def download_public_object(context: StorageContext, request: Request) -> Response:
    """No token needed; only a public bucket's objects, read with Storage's own rights."""
    bucket_id, name = _target(request)
    async with context.db.transaction(SERVICE) as conn:
        public = await conn.fetchval("SELECT public FROM storage.buckets WHERE id = $1", bucket_id)
    if not public:
        raise no_such_bucket()
    return await _serve(context, request, SERVICE, bucket_id, name)


async def download_signed_object(context: StorageContext, request: Request) -> Response:
    """The token is the capability (checked for this very object and its expiry), so the read is Storage's own."""
    bucket_id, name = _target(request)
    token = request.query_params.get("token")
    if not token:
        raise invalid_request("querystring must have required property 'token'")
    verify_object_token(context.jwt_secret, token, bucket_id, name)
    return await _serve(context, request, SERVICE, bucket_id, name)


async def _serve(context: StorageContext, request: Request, identity: Identity, bucket_id: str,
                 name: str) -> Response:
    # An upsert may replace the version between the select and the open: the second select sees the new one.
    for _ in range(2):
        async with context.db.transaction(identity) as conn:
            row = await conn.fetchrow(
                "SELECT version, metadata, updated_at FROM storage.objects WHERE bucket_id = $1 AND name = $2",
                bucket_id, name)
        if row is None or row["version"] is None:
            raise no_such_key()
        with contextlib.suppress(FileNotFoundError):
            handle = context.files.open(row["version"])
            break
    else:
        raise no_such_key()
    metadata = json.loads(row["metadata"]) if row["metadata"] else {}
    size = int(metadata.get("size") or 0)
    headers = {
        "Content-Length": str(size),
        "Cache-Control": str(metadata.get("cacheControl") or "no-cache"),
        "ETag": str(metadata.get("eTag") or ""),
        "Last-Modified": row["updated_at"].strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    download = request.query_params.get("download")
    if download is not None:
        filename = download or name.rsplit("/", 1)[-1]
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
    if request.method == "HEAD":
        os.close(handle)
        return Response(status_code=200, headers=headers, media_type=metadata.get("mimetype"))
    return StreamingResponse(stream_file(handle, size), headers=headers,
                             media_type=metadata.get("mimetype") or "application/octet-stream")


# -- info ----------------------------------------------------------------------------------------------------

async def object_info(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id, name = _target(request)
    async with context.db.transaction(identity) as conn:
        row = await conn.fetchrow(
            "SELECT id, name, version, bucket_id, metadata, user_metadata, created_at, updated_at "
            "FROM storage.objects WHERE bucket_id = $1 AND name = $2", bucket_id, name)
    if row is None:
        raise no_such_key()
    wire = record_to_wire(row)
    metadata = wire.pop("metadata") or {}
    return JSONResponse({
        "id": wire["id"], "name": wire["name"], "version": wire["version"], "bucket_id": wire["bucket_id"],
        "size": metadata.get("size"), "content_type": metadata.get("mimetype"),
        "cache_control": metadata.get("cacheControl"), "etag": metadata.get("eTag"),
        "metadata": wire["user_metadata"], "last_modified": wire["updated_at"], "created_at": wire["created_at"],
    })


# -- signing -------------------------------------------------------------------------------------------------

async def sign_object(context: StorageContext, request: Request) -> JSONResponse:
    """Only an object the caller may read gets a URL: the token itself is checked for nothing but its object."""
    identity = identify(context.verifier, request.headers)
    bucket_id, name = _target(request)
    payload = await read_json_object(request)
    expires_in = parse_expires_in(payload.get("expiresIn"))
    async with context.db.transaction(identity) as conn:
        found = await conn.fetchval("SELECT 1 FROM storage.objects WHERE bucket_id = $1 AND name = $2",
                                    bucket_id, name)
    if found is None:
        raise no_such_key()
    return JSONResponse({"signedURL": sign_object_url(context.jwt_secret, bucket_id, name, expires_in)})


async def sign_objects(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id = check_bucket_id(request.path_params["bucket"])
    payload = await read_json_object(request)
    expires_in = parse_expires_in(payload.get("expiresIn"))
    paths = _paths(payload, "paths")
    async with context.db.transaction(identity) as conn:
        visible = {row["name"] for row in await conn.fetch(
            "SELECT name FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2::text[])", bucket_id, paths)}
    return JSONResponse([
        {"path": path, "error": None, "signedURL": sign_object_url(context.jwt_secret, bucket_id, path, expires_in)}
        if path in visible else {"path": path, "error": NOT_ACCESSIBLE, "signedURL": None}
        for path in paths
    ])


def _paths(payload: dict[str, Any], field: str) -> list[str]:
    paths = payload.get(field)
    if not isinstance(paths, list) or not paths or len(paths) > MAX_PATHS_PER_REQUEST:
        raise invalid_request(f"{field} must be a list of 1 to {MAX_PATHS_PER_REQUEST} object names")
    return [check_object_name(path) for path in paths]


# -- list ----------------------------------------------------------------------------------------------------

def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _non_negative(payload: dict[str, Any], field: str, default: int, maximum: int | None = None) -> int:
    value = payload.get(field, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (maximum and value > maximum):
        bound = f" up to {maximum}" if maximum else ""
        raise invalid_request(f"{field} must be a whole number from 0{bound}")
    return value


async def list_objects(context: StorageContext, request: Request) -> JSONResponse:
    """One level of the bucket under `prefix`: its folders (id null, as Storage lists them) first, then objects."""
    identity = identify(context.verifier, request.headers)
    bucket_id = check_bucket_id(request.path_params["bucket"])
    payload = await read_json_object(request)
    prefix = check_prefix(payload.get("prefix"))
    limit = _non_negative(payload, "limit", 100, 1000)
    offset = _non_negative(payload, "offset", 0)
    search = payload.get("search") or ""
    if not isinstance(search, str):
        raise invalid_request("search must be a string")
    sort = payload.get("sortBy") or {}
    if not isinstance(sort, dict):
        raise invalid_request("sortBy must be an object {column, order}")
    column = sort.get("column", "name")
    order = str(sort.get("order", "asc")).lower()
    if column not in LIST_COLUMNS or order not in ("asc", "desc"):
        raise invalid_request(f"sortBy.column must be one of {', '.join(sorted(LIST_COLUMNS))}, "
                              "sortBy.order asc or desc")
    level = prefix.count("/") + 1
    # Column and order come from the lists above, never from the request's text.
    sql = f"""
        WITH matched AS (
            SELECT id, path_tokens, updated_at, created_at, last_accessed_at, metadata
            FROM storage.objects
            WHERE bucket_id = $1 AND starts_with(name, $2) AND substr(name, $3) ILIKE $4 ESCAPE '\\'
        ), entries AS (
            SELECT path_tokens[$5] AS name, NULL::uuid AS id, NULL::timestamptz AS updated_at,
                   NULL::timestamptz AS created_at, NULL::timestamptz AS last_accessed_at, NULL::jsonb AS metadata,
                   0 AS kind
            FROM matched WHERE array_length(path_tokens, 1) > $5 GROUP BY path_tokens[$5]
            UNION ALL
            SELECT path_tokens[$5], id, updated_at, created_at, last_accessed_at, metadata, 1
            FROM matched WHERE array_length(path_tokens, 1) = $5
        )
        SELECT name, id, updated_at, created_at, last_accessed_at, metadata FROM entries
        ORDER BY kind, {column} {order} NULLS LAST, name {order}
        LIMIT $6 OFFSET $7"""
    async with context.db.transaction(identity) as conn:
        rows = await conn.fetch(sql, bucket_id, prefix, len(prefix) + 1, _like_escaped(search) + "%", level,
                                limit, offset)
    return JSONResponse([record_to_wire(row) for row in rows])


# -- move, copy, remove --------------------------------------------------------------------------------------

def _move_arguments(payload: dict[str, Any]) -> tuple[str, str, str, str]:
    bucket_id = check_bucket_id(payload.get("bucketId"))
    source = check_object_name(payload.get("sourceKey"))
    destination = check_object_name(payload.get("destinationKey"))
    destination_bucket = check_bucket_id(payload.get("destinationBucket") or bucket_id)
    return bucket_id, source, destination_bucket, destination


async def move_object(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id, source, destination_bucket, destination = _move_arguments(await read_json_object(request))
    async with context.db.transaction(identity) as conn:
        status = await conn.execute(
            "UPDATE storage.objects SET bucket_id = $3, name = $4, updated_at = now() "
            "WHERE bucket_id = $1 AND name = $2", bucket_id, source, destination_bucket, destination)
    if status.endswith(" 0"):
        raise no_such_key()
    return JSONResponse({"message": "Successfully moved"})


async def copy_object(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id, source, destination_bucket, destination = _move_arguments(await read_json_object(request))
    async with context.db.transaction(identity) as conn:
        row = await conn.fetchrow(
            "SELECT version, metadata, user_metadata FROM storage.objects WHERE bucket_id = $1 AND name = $2",
            bucket_id, source)
    if row is None or row["version"] is None:
        raise no_such_key()
    metadata = json.loads(row["metadata"]) if row["metadata"] else {}
    metadata["lastModified"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    try:
        version = context.files.copy(row["version"])
    except FileNotFoundError as exc:  # replaced meanwhile: the copy's source no longer exists as read
        raise no_such_key() from exc
    try:
        async with context.db.transaction(identity) as conn:
            object_id = await conn.fetchval(
                "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, user_metadata, version) "
                "VALUES ($1, $2, nullif($3, '')::uuid, nullif($3, ''), $4::jsonb, $5::jsonb, $6) RETURNING id",
                destination_bucket, destination, identity.subject, json.dumps(metadata), row["user_metadata"],
                version)
    except BaseException:
        context.files.remove(version)
        raise
    return JSONResponse({"Id": str(object_id), "Key": f"{destination_bucket}/{destination}"})


async def remove_objects(context: StorageContext, request: Request) -> JSONResponse:
    """Deletes what the caller's delete policies allow of `prefixes` (exact names, as Storage takes them)."""
    identity = identify(context.verifier, request.headers)
    bucket_id = check_bucket_id(request.path_params["bucket"])
    names = _paths(await read_json_object(request), "prefixes")
    async with context.db.transaction(identity) as conn:
        rows = await conn.fetch(
            "DELETE FROM storage.objects WHERE bucket_id = $1 AND name = ANY($2::text[]) "
            "RETURNING id, bucket_id, name, owner, metadata, created_at, updated_at, last_accessed_at, version",
            bucket_id, names)
    context.files.remove(*(row["version"] for row in rows))
    return JSONResponse([{k: v for k, v in record_to_wire(row).items() if k != "version"} for row in rows])

