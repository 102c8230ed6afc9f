"""`tgcrm db up` as a real subprocess: it serves the REST and Storage APIs, and a stop signal takes its PostgreSQL
down with it (uvicorn re-raises the signal it caught once it has shut down; unhandled, that skipped our cleanup)."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.stack_process import hermetic_env
from tests.helpers.net import free_ports


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=drain, daemon=True).start()
    return lines


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_its_postgres_too(tmp_path: Path, stop: signal.Signals) -> None:
    api_port, db_port = free_ports(2)
    process = subprocess.Popen(
        [sys.executable, "-m", "tgcrm", "db", "up", "--state-dir", str(tmp_path / "state"),
         "--api-port", str(api_port), "--db-port", str(db_port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=hermetic_env())
    tree: list[psutil.Process] = []
    try:
        lines, values = _lines(process), {}
        while True:
            line = lines.get(timeout=120)
            if line == "READY":
                break
            name, _, value = line.partition("=")
            values[name] = value
        answer = httpx.get(f"{values['SUPABASE_URL']}/storage/v1/bucket",
                           headers={"apikey": values["SUPABASE_SERVICE_ROLE_KEY"],
                                    "Authorization": f"Bearer {values['SUPABASE_SERVICE_ROLE_KEY']}"})
        assert answer.status_code == 200 and any(bucket["id"] == "chat-media" for bucket in answer.json())
        tree = psutil.Process(process.pid).children(recursive=True)
        assert any("postgres" in child.name() for child in tree), "PostgreSQL runs under db up"

        process.send_signal(stop)
        assert process.wait(timeout=120) == 0
        gone, alive = psutil.wait_procs(tree, timeout=60)
        assert not alive, f"still running after db up stopped: {[p.name() for p in alive]}"
    finally:
        if process.poll() is None:
            process.kill()
        for leftover in tree:
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                pass
        process.wait()
