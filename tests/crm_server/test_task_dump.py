"""`kill -USR1 <crm_server>` writes where each asyncio task waits to the log, and the server goes on serving."""

from __future__ import annotations

import signal
import time

import httpx

from tests.crm_server.server_process import running_server


def test_sigusr1_dumps_every_task_and_thread_and_the_server_keeps_serving() -> None:
    with running_server("task-dump", {}) as server:
        assert server.process is not None
        before = server.log_path.stat().st_size
        server.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        dump = ""
        while time.monotonic() < deadline and "--- threads ---" not in dump:
            time.sleep(0.05)
            dump = server.log_path.read_bytes()[before:].decode(errors="replace")
        assert "asyncio tasks ---" in dump
        assert "task crm-lease-loop:" in dump  # the accounts' lease loop, by its task name
        assert "crm_server/telegram/manager.py" in dump  # with its stack
        assert 'File "' in dump.split("--- threads ---", 1)[1]  # and every thread's stack after them
        assert httpx.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
