"""Reading a request body up to a limit: refused on its declared length before a byte is read, or as soon as what
arrives passes the limit (chunked bodies declare none). Each app maps `BodyTooLarge` to its own 413.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Message


class BodyTooLarge(Exception):
    """The body is (or declares to be) larger than `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than {limit} bytes")
        self.limit = limit


def declared_too_large(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (the stream is consumed: read it this way once)."""
    if declared_too_large(request, limit):
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def with_body_read(request: Request, limit: int) -> Request:
    """The request with its body read up front (at most `limit` bytes) and replayed to whoever reads it next."""
    body = await read_body(request, limit)
    replayed = False
    receive = request.receive

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return Request(request.scope, replay)
