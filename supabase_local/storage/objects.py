"""The object endpoints but uploads: download (as the caller, public, signed), sign, list, info, move, copy, remove.

Reads, lists and signing select from storage.objects as the caller; moves update, removals delete: the RLS policies
on storage.objects decide each, as in Supabase Storage. A file a row stopped naming is removed only after that row
committed; a copy's file exists before its row.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from supabase_local.rest.auth import Identity
from supabase_local.storage.access import SERVICE, identify
from supabase_local.storage.context import StorageContext, read_json_object, record_to_wire
from supabase_local.storage.errors import invalid_request, no_such_bucket, no_such_key
from supabase_local.storage.files import stream_file
from supabase_local.storage.ranges import parse_range
from supabase_local.storage.paths import check_bucket_id, check_object_name, check_prefix, target_of
from supabase_local.storage.signing import parse_expires_in, sign_object_url, verify_object_token
from supabase_local.storage.uploads import now_iso

MAX_PATHS_PER_REQUEST = 1000
LIST_COLUMNS = {"name", "created_at", "updated_at", "last_accessed_at"}
NOT_ACCESSIBLE = "Either the object does not exist or you do not have access to it"


# -- download ------------------------------------------------------------------------------------------------

async def download_object(context: StorageContext, request: Request) -> Response:
    """`GET /object/{bucket}/{path}` and `/object/authenticated/...`: what the caller's select policies let it read."""
    identity = identify(context.verifier, request.headers)
    bucket_id, name = target_of(request.path_params)
    return await _serve(context, request, identity, bucket_id, name)


async def download_public_object(context: StorageContext, request: Request) -> Response:
    """No token needed; only a public bucket's objects, read with Storage's own rights."""
    bucket_id, name = target_of(request.path_params)
    async with context.db.transaction(SERVICE) as conn:
        public = await conn.fetchval("SELECT public FROM storage.buckets WHERE id = $1", bucket_id)
    if not public:
        raise no_such_bucket()
    return await _serve(context, request, SERVICE, bucket_id, name)


async def download_signed_object(context: StorageContext, request: Request) -> Response:
    """The token is the capability (checked for this very object and its expiry), so the read is Storage's own."""
    bucket_id, name = target_of(request.path_params)
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
    size = os.fstat(handle).st_size  # the bytes themselves say how many they are
    headers = {
        # Users upload what they like (HTML too) and it is served from the API's origin, beside the admin page:
        # as its own opaque origin, with no sniffing, it cannot script that page or read its session.
        "Content-Security-Policy": "sandbox",
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "bytes",
        "Cache-Control": str(metadata.get("cacheControl") or "no-cache"),
        "ETag": str(metadata.get("eTag") or ""),
        "Last-Modified": row["updated_at"].strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    download = request.query_params.get("download")
    if download is not None:
        filename = download or name.rsplit("/", 1)[-1]
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
    try:
        wanted = parse_range(request.headers.get("range"), size)
    except BaseException:
        os.close(handle)
        raise
    status, offset, length = 200, 0, size
    if wanted is not None:
        status, offset, length = 206, wanted.start, wanted.length
        headers["Content-Range"] = wanted.content_range(size)
    headers["Content-Length"] = str(length)
    media_type = metadata.get("mimetype") or "application/octet-stream"
    if request.method == "HEAD":
        os.close(handle)
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(stream_file(handle, length, offset), status_code=status, headers=headers,
                             media_type=media_type)


# -- info ----------------------------------------------------------------------------------------------------

async def object_info(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id, name = target_of(request.path_params)
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
    bucket_id, name = target_of(request.path_params)
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
    metadata["lastModified"] = now_iso()
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

