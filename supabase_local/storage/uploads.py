"""The upload endpoints: `POST|PUT /object/{bucket}/{path}` as the caller (RLS insert; upsert also update), and
signed uploads (`POST /object/upload/sign/...` makes the URL for a caller allowed to upload; `PUT` with its token).

Bytes and rows never disagree: the bytes are complete in their own file (a new version) before the row names
them in a transaction; a failed write removes that file, and the version a row stopped naming goes once committed.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse

from supabase_local.rest.auth import Identity
from supabase_local.storage.access import SERVICE, identify
from supabase_local.storage.context import StorageContext
from supabase_local.storage.errors import (
    access_denied,
    invalid_mime_type,
    invalid_request,
    key_already_exists,
    no_such_bucket,
)
from supabase_local.storage.paths import target_of
from supabase_local.storage.signing import sign_upload_url, verify_object_token
from supabase_local.storage.upload_body import receive_upload

INSERT_OBJECT = (
    "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, user_metadata, version) "
    "VALUES ($1, $2, nullif($3, '')::uuid, nullif($3, ''), $4::jsonb, $5::jsonb, $6)")


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


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def upload_object(context: StorageContext, request: Request) -> JSONResponse:
    identity = identify(context.verifier, request.headers)
    bucket_id, name = target_of(request.path_params)
    return await _receive_and_store(context, request, identity, bucket_id, name, _upsert_requested(request))


async def create_upload_url(context: StorageContext, request: Request) -> JSONResponse:
    """Only for a caller whose insert policies take this object now: the token then carries that permission."""
    identity = identify(context.verifier, request.headers)
    bucket_id, name = target_of(request.path_params)
    upsert = request.headers.get("x-upsert", "").strip().lower() == "true"
    async with context.db.transaction(SERVICE) as conn:
        if await conn.fetchval("SELECT 1 FROM storage.buckets WHERE id = $1", bucket_id) is None:
            raise no_such_bucket()
    async with context.db.transaction(identity) as conn:
        # A trial insert, rolled back: RLS says yes or no now, as Storage checks before it signs.
        probe = conn.transaction()
        await probe.start()
        try:
            await conn.execute(INSERT_OBJECT, bucket_id, name, identity.subject, "{}", None, None)
        except Exception as exc:  # noqa: BLE001 - only "exists" is an answer here; the rest is re-raised
            if getattr(exc, "sqlstate", None) != "23505":
                raise
            if not upsert:
                raise key_already_exists() from exc
        finally:
            await probe.rollback()
    url = sign_upload_url(context.jwt_secret, bucket_id, name, identity.subject, upsert)
    return JSONResponse({"url": url, "token": url.rsplit("token=", 1)[1]})


async def upload_to_signed_url(context: StorageContext, request: Request) -> JSONResponse:
    """The token is the permission (checked at signing): the row is written with Storage's rights, as its owner."""
    bucket_id, name = target_of(request.path_params)
    token = request.query_params.get("token")
    if not token:
        raise invalid_request("querystring must have required property 'token'")
    claims = verify_object_token(context.jwt_secret, token, bucket_id, name)
    owner = claims.get("owner")
    writer = dataclasses.replace(SERVICE, subject=owner if isinstance(owner, str) else "")
    return await _receive_and_store(context, request, writer, bucket_id, name, claims.get("upsert") is True)


async def _receive_and_store(context: StorageContext, request: Request, identity: Identity, bucket_id: str,
                             name: str, upsert: bool) -> JSONResponse:
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
            "cacheControl": upload.cache_control or "no-cache", "lastModified": now_iso(),
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
    arguments = (bucket_id, name, identity.subject, metadata_json, user_metadata_json, version)
    async with context.db.transaction(identity) as conn:
        if not upsert:
            return str(await conn.fetchval(INSERT_OBJECT + " RETURNING id", *arguments)), None
        object_id = await conn.fetchval(INSERT_OBJECT + " ON CONFLICT (bucket_id, name) DO NOTHING RETURNING id",
                                        *arguments)
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

