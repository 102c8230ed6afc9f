"""serve_announcing_ready: READY once the socket listens, and the heap start-up left behind frozen before it."""

from __future__ import annotations

import asyncio
import gc

import httpx
import pytest
import uvicorn

from safeguards.serving import serve_announcing_ready
from tests.helpers.net import free_port


async def hello(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
def unfrozen():
    """This test process's heap as it was: unfrozen before and after."""
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_a_started_server_has_frozen_its_start_up_heap_before_ready(unfrozen, capsys) -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(hello, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    assert gc.get_freeze_count() == 0
    serving = asyncio.create_task(serve_announcing_ready(server))
    while "READY" not in capsys.readouterr().out:
        await asyncio.sleep(0.02)
    # Everything alive at READY (this test's modules and all) is left out of later collections.
    assert gc.get_freeze_count() > 10_000
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{port}/")).text == "hello"
    server.should_exit = True
    assert await serving == 0
