"""A local stand-in for Wappi.pro's personal-Telegram API (the formats in WAPPI.md), on a real loopback socket.

It checks the `Authorization` token per `profile_id`, sends synchronously, takes files by URL, answers errors as
`{"status": "error", "detail": ...}`, and records every request so tests can see exactly what the functions sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
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
class WappiRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class WappiProfile:
    token: str
    # Recipients Telegram "knows" for this account; None accepts any recipient.
    known_recipients: set[str] | None = None


@dataclass
class ScriptedFailure:
    status: int
    body: str
    content_type: str = "application/json"


@dataclass
class WappiStandIn:
    profiles: dict[str, WappiProfile] = field(default_factory=dict)
    requests: list[WappiRequest] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    failures: list[ScriptedFailure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def add_profile(self, profile_id: str, token: str, known_recipients: set[str] | None = None) -> None:
        with self.lock:
            self.profiles[profile_id] = WappiProfile(token, known_recipients)

    def fail_next(self, status: int = 500, detail: str = "Internal error", *, times: int = 1,
                  raw: str | None = None) -> None:
        """The next `times` calls answer `status` (JSON error body, or `raw` text as it is)."""
        body = raw if raw is not None else f'{{"status": "error", "detail": "{detail}"}}'
        content_type = "text/plain" if raw is not None else "application/json"
        with self.lock:
            self.failures.extend(ScriptedFailure(status, body, content_type) for _ in range(times))

    def sent_by(self, profile_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [message for message in self.sent if message["profile_id"] == profile_id]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.sent.clear()
            self.failures.clear()

    # --- the API -----------------------------------------------------------------------------------------------

    async def _record(self, request: Request) -> WappiRequest:
        raw = await request.body()
        body: Any
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        recorded = WappiRequest(request.method, request.url.path, dict(request.query_params), dict(request.headers),
                                body)
        with self.lock:
            self.requests.append(recorded)
        return recorded

    def _gate(self, recorded: WappiRequest) -> tuple[WappiProfile | None, Response | None]:
        """Scripted failure, then auth: the profile, or the error response to answer."""
        with self.lock:
            failure = self.failures.pop(0) if self.failures else None
            profile = self.profiles.get(recorded.query.get("profile_id", ""))
        if failure is not None:
            return None, Response(failure.body, status_code=failure.status, media_type=failure.content_type)
        token = recorded.headers.get("authorization", "")
        if profile is None:
            return None, _error(404, "Profile not found")
        if token != profile.token:
            return None, _error(401, "Unauthorized: wrong token")
        return profile, None

    def _deliver(self, profile_id: str, profile: WappiProfile, recipient: object, message: dict[str, Any]) -> Response:
        if not isinstance(recipient, str) or not recipient:
            return _error(400, "recipient is required")
        known = profile.known_recipients
        if known is not None and recipient.lstrip("@") not in {item.lstrip("@") for item in known}:
            return _error(400, f"Telegram error: PEER_NOT_FOUND for {recipient}")
        message_id = str(next(self._ids))
        with self.lock:
            self.sent.append({"profile_id": profile_id, "recipient": recipient, "message_id": message_id, **message})
        return JSONResponse({"status": "done", "timestamp": 0, "time": "", "message_id": message_id,
                             "uuid": profile_id})

    async def send_message(self, request: Request) -> Response:
        recorded = await self._record(request)
        profile, refused = self._gate(recorded)
        if refused is not None:
            return refused
        assert profile is not None
        body = recorded.body if isinstance(recorded.body, dict) else {}
        if not isinstance(body.get("body"), str) or not body["body"]:
            return _error(400, "body is required")
        return self._deliver(recorded.query["profile_id"], profile, body.get("recipient"),
                             {"kind": "text", "body": body["body"]})

    async def send_file_by_url(self, request: Request) -> Response:
        recorded = await self._record(request)
        profile, refused = self._gate(recorded)
        if refused is not None:
            return refused
        assert profile is not None
        body = recorded.body if isinstance(recorded.body, dict) else {}
        if not isinstance(body.get("url"), str) or not body["url"].startswith(("http://", "https://")):
            return _error(400, "url is required")
        return self._deliver(recorded.query["profile_id"], profile, body.get("recipient"),
                             {"kind": "file", "url": body["url"], "caption": body.get("caption"),
                              "file_name": body.get("file_name")})

    async def status(self, request: Request) -> Response:
        recorded = await self._record(request)
        profile, refused = self._gate(recorded)
        if refused is not None:
            return refused
        return JSONResponse({"authorized": True, "phone": "79990000000", "username": "standin"})

    async def set_webhook(self, request: Request) -> Response:
        recorded = await self._record(request)
        profile, refused = self._gate(recorded)
        if refused is not None:
            return refused
        body = recorded.body if isinstance(recorded.body, dict) else {}
        url = recorded.query.get("url") or body.get("url") or body.get("webhook_url")
        if not url:
            return _error(400, "url is required")
        return JSONResponse({"status": "done", "url": url})

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/tapi/sync/message/send", self.send_message, methods=["POST"]),
            Route("/tapi/sync/message/file/url/send", self.send_file_by_url, methods=["POST"]),
            Route("/tapi/sync/get/status", self.status, methods=["GET"]),
            Route("/tapi/webhook/url/set", self.set_webhook, methods=["POST"]),
            Route("/health", lambda request: PlainTextResponse("ok")),
        ])


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"status": "error", "detail": detail}, status_code=status)


@contextmanager
def serve_wappi_standin(standin: WappiStandIn | None = None) -> Iterator[tuple[WappiStandIn, str]]:
    """Run the stand-in under uvicorn in a thread on a free loopback port; yields (stand-in, base URL)."""
    standin = standin or WappiStandIn()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(standin.app(), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="wappi-standin", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base_url}/health", expect_status=200)
        yield standin, base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
