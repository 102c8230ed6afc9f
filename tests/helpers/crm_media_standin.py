"""A stand-in for the routes of crm_server whose requests the tests read, on a real loopback socket:
`GET /media/{id}?token=` (the signed, expiring capability URL an event's `media.url` names), `POST /telegram/send`
(which records the body, so tests see the `file_url` crm_server would download), `POST /telegram/read` and
`POST /integration/lovable/connect` (recorded: what mark-read and connect asked for).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.helpers.net import free_port, wait_http


@dataclass
class MediaFile:
    data: bytes
    token: str
    content_type: str
    # Answers before the file: each scripted status is answered once, in order (a flaky crm_server).
    failures: list[int] = field(default_factory=list)
    # What the stand-in serves instead of `data` (a truncated or altered transfer); None: `data`.
    served: bytes | None = None


@dataclass
class CrmMediaStandIn:
    base_url: str = ""
    files: dict[str, MediaFile] = field(default_factory=dict)
    fetches: dict[str, int] = field(default_factory=dict)
    sends: list[dict[str, Any]] = field(default_factory=list)
    reads: list[dict[str, Any]] = field(default_factory=list)
    connects: list[dict[str, Any]] = field(default_factory=list)
    # The status /telegram/read answers (a logged-out account: 409).
    read_status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(5000))

    def add(self, data: bytes, *, content_type: str = "application/octet-stream", failures: list[int] | None = None,
            served: bytes | None = None) -> str:
        """Serve `data`; returns its signed URL (as crm_server puts it in `media.url`)."""
        media_id, token = secrets.token_hex(8), secrets.token_urlsafe(16)
        with self.lock:
            self.files[media_id] = MediaFile(data, token, content_type, list(failures or []), served)
        return f"{self.base_url}/media/{media_id}?token={token}"

    def media(self, data: bytes, kind: str, **fields: Any) -> dict[str, Any]:
        """An event's `media` for `data` served here (fields override: a wrong size, another url...)."""
        options = {name: fields.pop(name) for name in ("content_type", "failures", "served") if name in fields}
        url = self.add(data, **options)
        return {"kind": kind, "mime_type": options.get("content_type"), "file_name": None, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "url": url,
                "expires_at": "2999-01-01T00:00:00Z", **fields}

    def fetch_count(self, url: str) -> int:
        media_id = url.split("/media/", 1)[1].split("?", 1)[0]
        with self.lock:
            return self.fetches.get(media_id, 0)

    async def serve_media(self, request: Request) -> Response:
        media_id = request.path_params["media_id"]
        with self.lock:
            self.fetches[media_id] = self.fetches.get(media_id, 0) + 1
            found = self.files.get(media_id)
            failure = found.failures.pop(0) if found is not None and found.failures else None
        if found is None or not secrets.compare_digest(request.query_params.get("token", ""), found.token):
            return JSONResponse({"success": False, "error": "No such media", "code": "MEDIA_NOT_FOUND"},
                                status_code=404)
        if failure is not None:
            return JSONResponse({"success": False, "error": "scripted failure", "code": "INTERNAL_ERROR"},
                                status_code=failure)
        return Response(found.data if found.served is None else found.served, media_type=found.content_type)

    async def send(self, request: Request) -> Response:
        body = await request.json()
        message_id = next(self._ids)
        with self.lock:
            self.sends.append({"body": body, "headers": dict(request.headers)})
        return JSONResponse({"status": "sent", "message_id": message_id, "chat_id": 1234, "to_user_id": 1234,
                             "date": "2026-12-01T00:00:00Z"})

    async def read(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            self.reads.append(body)
            status = self.read_status
        if status != 200:
            return JSONResponse({"success": False, "error": "scripted", "code": "NOT_AUTHORIZED"}, status_code=status)
        return JSONResponse({"status": "read", "max_id": body.get("max_id")})

    async def connect(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            self.connects.append(body)
        return JSONResponse({"status": "auth_required", "project_id": body["project_id"], "phone": body["phone"],
                             "webhook_url": body["webhook_url"], "account": {"authorized": False},
                             "signing": "standard-webhooks"})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/media/{media_id}", self.serve_media, methods=["GET"]),
            Route("/telegram/send", self.send, methods=["POST"]),
            Route("/telegram/read", self.read, methods=["POST"]),
            Route("/integration/lovable/connect", self.connect, methods=["POST"]),
            Route("/health", lambda request: PlainTextResponse("ok")),
        ])


@contextmanager
def serve_crm_media_standin() -> Iterator[CrmMediaStandIn]:
    """Run the stand-in under uvicorn in a thread on a free loopback port."""
    port = free_port()
    standin = CrmMediaStandIn(base_url=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(standin.app(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="crm-media-standin", daemon=True)
    thread.start()
    try:
        wait_http(f"{standin.base_url}/health", expect_status=200)
        yield standin
    finally:
        server.should_exit = True
        thread.join(timeout=10)
