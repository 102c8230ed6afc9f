"""A programmable webhook receiver on a real loopback socket: records what arrives, answers what a test scripts.

It stands for telegram-crm-webhook (or any receiver) in crm_server's delivery tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.helpers.net import free_port, wait_http


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


# A script decides the answer for each request: (status, headers), or (status, headers, JSON body) — or sleeps
# first to be slow.
Script = Callable[[Received], tuple[int, dict[str, str]] | tuple[int, dict[str, str], Any]]


@dataclass
class Receiver:
    url: str
    received: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    script: Script | None = None
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.accepted.clear()
        self.script = None
        self.delay = 0.0

    def accepted_ids(self) -> list[str]:
        with self.lock:
            return [item.headers["webhook-id"] for item in self.accepted]

    def wait_for(self, predicate: Callable[["Receiver"], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.02)
        raise TimeoutError(f"receiver condition not met in {timeout}s; accepted {len(self.accepted)}")


def batch_answers(decide: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Script:
    """A script answering a batch as the contract says: one result per event, `decide(event)` (default: ok)."""
    def script(item: Received) -> tuple[int, dict[str, str], Any]:
        results = [{"event_id": event["event_id"], **(decide(event) if decide else {"ok": True})}
                   for event in item.json["events"]]
        return 200, {}, {"results": results}
    return script


def _app(receiver: Receiver) -> Starlette:
    async def hook(request: Request) -> Response:
        item = Received(headers={k.lower(): v for k, v in request.headers.items()}, body=await request.body(),
                        at=time.time())
        if receiver.delay:
            await asyncio.sleep(receiver.delay)
        answer = (200, {}) if receiver.script is None else receiver.script(item)
        status, headers = answer[0], answer[1]
        with receiver.lock:
            receiver.received.append(item)
            if 200 <= status < 300:
                receiver.accepted.append(item)
        body = answer[2] if len(answer) > 2 else {"ok": 200 <= status < 300}  # type: ignore[misc]
        return JSONResponse(body, status_code=status, headers=headers)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/health", health)])


@contextmanager
def running_receiver() -> Iterator[Receiver]:
    port = free_port()
    receiver = Receiver(url=f"http://127.0.0.1:{port}/hook")
    server = uvicorn.Server(uvicorn.Config(_app(receiver), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/health", expect_status=200)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(10)
