"""Serving one of our uvicorn servers and telling whoever started the process that it listens: the line `READY`.

`tgcrm up`, `tgcrm db up`, `tgcrm server`, `tgcrm functions` and the tests wait for that line on stdout; it is
written only once the socket listens, and in one write (print() writes the text and the newline separately, and a
log line from another thread landing between them hid READY).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from safeguards.heap import freeze_startup_heap

POLL_SECONDS = 0.02


async def start_serving(server: Any) -> asyncio.Task[None]:
    """`server.serve()` in a task, returned once the server listens (`server.started`) or has already ended."""
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(POLL_SECONDS)
    return serving


def announce(line: str) -> None:
    """A line for whoever started us (NAME=value, READY) in one write."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def serve_announcing_ready(server: Any) -> int:
    """Serve until the server stops, `READY` once it listens; 0, or 1 when it never started (port taken...)."""
    serving = await start_serving(server)
    if server.started:
        freeze_startup_heap()  # the app has started (lifespan and all): what exists now lives as long as we do
        announce("READY")
    await serving
    return 0 if server.started else 1
