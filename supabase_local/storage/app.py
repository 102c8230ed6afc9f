"""The Supabase Storage-compatible HTTP surface mounted at `/storage/v1`: the routes storage3 (supabase-py) calls,
in one screen, each endpoint in buckets.py or objects.py; every failure leaves in Storage's error shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supabase_local.rest.auth import JwtVerifier
from supabase_local.storage import buckets, objects, uploads
from supabase_local.storage.access import Database
from supabase_local.storage.context import DEFAULT_MAX_UPLOAD_BYTES, StorageContext
from supabase_local.storage.errors import StorageError, internal_error, logger
from supabase_local.storage.files import FileStore

Endpoint = Callable[[StorageContext, Request], Awaitable[Response]]
CORS_HEADERS = ["authorization", "apikey", "content-type", "x-client-info", "x-upsert", "cache-control",
                "x-metadata", "range"]
EXPOSED_HEADERS = ["Content-Range", "Content-Length", "ETag", "Accept-Ranges", "Content-Disposition"]


def _answering(context: StorageContext, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(context, request)
        except StorageError as exc:
            return exc.response(include_body=request.method != "HEAD")
        except Exception:  # noqa: BLE001 - the client gets Storage's 500, the log the traceback (no bodies in it)
            logger.exception("unhandled error in %s %s", request.method, request.url.path)
            return internal_error().response()

    return answer


def create_storage_app(authenticator_dsn: str, jwt_secret: str, storage_dir: Path, *,
                       max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> Starlette:
    """The `/storage/v1` app (routes relative to the mount point); files under `storage_dir`, metadata in the
    database's `storage` schema, reached as the `authenticator` login switching to each caller's role."""
    context = StorageContext(db=Database(authenticator_dsn), files=FileStore(storage_dir),
                             verifier=JwtVerifier(jwt_secret), jwt_secret=jwt_secret,
                             max_upload_bytes=max_upload_bytes)
    on = partial(_answering, context)
    path = "{path:path}"
    routes = [
        Route("/bucket", on(buckets.list_buckets), methods=["GET"]),
        Route("/bucket", on(buckets.create_bucket), methods=["POST"]),
        Route("/bucket/{bucket}/empty", on(buckets.empty_bucket), methods=["POST"]),
        Route("/bucket/{bucket}", on(buckets.get_bucket), methods=["GET"]),
        Route("/bucket/{bucket}", on(buckets.update_bucket), methods=["PUT"]),
        Route("/bucket/{bucket}", on(buckets.delete_bucket), methods=["DELETE"]),
        # The fixed words first: `/object/{bucket}/{path}` would take `sign`, `list`, ... as a bucket id.
        Route("/object/move", on(objects.move_object), methods=["POST"]),
        Route("/object/copy", on(objects.copy_object), methods=["POST"]),
        Route("/object/list/{bucket}", on(objects.list_objects), methods=["POST"]),
        Route(f"/object/upload/sign/{{bucket}}/{path}", on(uploads.create_upload_url), methods=["POST"]),
        Route(f"/object/upload/sign/{{bucket}}/{path}", on(uploads.upload_to_signed_url), methods=["PUT"]),
        Route(f"/object/sign/{{bucket}}/{path}", on(objects.sign_object), methods=["POST"]),
        Route(f"/object/sign/{{bucket}}/{path}", on(objects.download_signed_object), methods=["GET"]),
        Route("/object/sign/{bucket}", on(objects.sign_objects), methods=["POST"]),
        Route(f"/object/info/{{bucket}}/{path}", on(objects.object_info), methods=["GET"]),
        Route(f"/object/public/{{bucket}}/{path}", on(objects.download_public_object), methods=["GET"]),
        Route(f"/object/authenticated/{{bucket}}/{path}", on(objects.download_object), methods=["GET"]),
        Route(f"/object/{{bucket}}/{path}", on(uploads.upload_object), methods=["POST", "PUT"]),
        Route(f"/object/{{bucket}}/{path}", on(objects.download_object), methods=["GET"]),
        Route("/object/{bucket}", on(objects.remove_objects), methods=["DELETE"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await context.db.close()

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[
        Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
                   allow_headers=CORS_HEADERS, expose_headers=EXPOSED_HEADERS, max_age=86400)])
    app.state.storage = context
    return app
