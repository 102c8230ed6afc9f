"""A webhook receiver that costs next to nothing, in its own process: HTTP/1.1 keep-alive on asyncio streams, 200 to
every POST, counting distinct events. What a delivery bench measures is then the sender, not the receiver.

A single event's POST counts its `webhook-id` (the event id). A batch (`{batch_id, events: [...]}`, contract section
"Batched delivery") counts each event's `event_id` and is answered `{results: [{event_id, ok: true, duplicate}]}`,
as telegram-crm-webhook answers it: a batch answered `{}` would be retried event by event, never delivered.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import socket
import time
from multiprocessing.sharedctypes import Synchronized

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
_BATCH_PREFIX = b'{"batch_id"'  # crm_server writes the batch's id first (crm_server/webhooks/posting.py)
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"


def _batch_answer(body: bytes, seen: set[str]) -> tuple[bytes, int]:
    """The batch's 200 answer, and how many of its events were new."""
    results = []
    new = 0
    for event in json.loads(body)["events"]:
        event_id = str(event["event_id"])
        duplicate = event_id in seen
        if not duplicate:
            seen.add(event_id)
            new += 1
        results.append({"event_id": event_id, "ok": True, "duplicate": duplicate})
    answer = json.dumps({"results": results}).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(answer) + answer, new


def _serve(port: int, accepted: Synchronized, available: Synchronized, ready: multiprocessing.Event) -> None:
    seen: set[str] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                event_id = b""
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        event_id = value.strip()
                body = await reader.readexactly(length) if length else b""
                if not available.value:
                    writer.write(UNAVAILABLE)
                else:
                    if body.startswith(_BATCH_PREFIX):
                        answer, new = _batch_answer(body, seen)
                    else:
                        answer, new = OK, int(event_id.decode() not in seen)
                        seen.add(event_id.decode())
                    if new:
                        with accepted.get_lock():
                            accepted.value += new
                    writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class FastReceiver:
    """`with FastReceiver() as receiver:` — `receiver.url`, `receiver.accepted` (distinct events), and
    `receiver.available = False` to answer 503 (a receiver that is down but reachable)."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/hook"
        # fork: the child needs nothing from this process but the function, and no `__main__` guard is needed.
        context = multiprocessing.get_context("fork")
        self._accepted = context.Value("q", 0)
        self._available = context.Value("b", 1)
        self._ready = context.Event()
        self._process = context.Process(target=_serve, args=(self.port, self._accepted, self._available, self._ready),
                                        daemon=True)

    @property
    def accepted(self) -> int:
        return int(self._accepted.value)

    @property
    def available(self) -> bool:
        return bool(self._available.value)

    @available.setter
    def available(self, value: bool) -> None:
        self._available.value = 1 if value else 0

    def wait_for(self, count: int, timeout: float) -> float:
        """Seconds until `count` distinct events arrived (TimeoutError after `timeout`)."""
        started = time.monotonic()
        while self.accepted < count:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"only {self.accepted} of {count} events arrived in {timeout:.0f}s")
            time.sleep(0.005)
        return time.monotonic() - started

    def __enter__(self) -> FastReceiver:
        self._process.start()
        if not self._ready.wait(30):
            raise RuntimeError("the receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(10)
