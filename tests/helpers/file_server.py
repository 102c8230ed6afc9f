"""A file host on a real loopback socket: serves the bytes a test puts at a path (with or without Content-Length),
redirects, and errors, and counts requests. It stands for Supabase Storage's signed URLs in outgoing-media tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.helpers.net import free_port, wait_http


@dataclass
class FileServer:
    base: str
    port: int
    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path → (content, content type)
    chunked: set[str] = field(default_factory=set)  # served without Content-Length
    redirects: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def put(self, path: str, content: bytes, content_type: str = "application/octet-stream") -> str:
        self.files[path] = (content, content_type)
        return f"{self.base}{path}"


def _app(server: FileServer) -> Starlette:
    async def serve(request: Request) -> Response:
        path = request.url.path
        server.requests.append(path)
        if path == "/health":
            return Response("ok")
        if path in server.redirects:
            return RedirectResponse(server.redirects[path], status_code=302)
        if path not in server.files:
            return Response("not found", status_code=404)
        content, content_type = server.files[path]
        if path in server.chunked:
            async def pieces() -> Iterator[bytes]:  # type: ignore[misc]
                for start in range(0, len(content), 16384):
                    yield content[start:start + 16384]
            return StreamingResponse(pieces(), media_type=content_type)
        return Response(content, media_type=content_type)

    return Starlette(routes=[Route("/{path:path}", serve)])


@contextmanager
def running_file_server() -> Iterator[FileServer]:
    port = free_port()
    server = FileServer(base=f"http://127.0.0.1:{port}", port=port)
    uv = uvicorn.Server(uvicorn.Config(_app(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    wait_http(f"{server.base}/health", expect_status=200)
    try:
        yield server
    finally:
        uv.should_exit = True
        thread.join(10)
