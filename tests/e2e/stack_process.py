"""`tgcrm up` as a real subprocess on free ports with its own state folder, the way a newcomer runs `make run`.

Reads the NAME=value lines and READY from its stdout (a thread keeps draining it), keeps its stderr in a log file,
and stops it with a signal; `descendants()` lists the process tree so tests can check nothing outlives it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.helpers.net import free_ports

LOGIN_CODE = "12345"


def hermetic_env() -> dict[str, str]:
    """The parent's environment without the stack's settings, so a developer's shell cannot change the tests
    (no TELEGRAM_* either: crm_server runs on the sandbox)."""
    prefixes = ("CRM_", "TGCRM_", "TELEGRAM_", "SUPABASE_", "FUNCTIONS_", "DEMO_")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(prefixes) and key != "DATABASE_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class StackProcess:
    def __init__(self, state_dir: Path, *, name: str = "stack", env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.name = name
        self.env = dict(env or {})  # on top of hermetic_env(), e.g. the supervisor's TGCRM_RESTART_DELAY_* knobs
        self.api_port, self.crm_port, self.db_port = free_ports(3)
        self.process: subprocess.Popen[str] | None = None
        self.values: dict[str, str] = {}
        self.stdout_lines: list[str] = []
        self.log_path = state_dir.parent / f"{state_dir.name}-{name}.log"
        self._lines: queue.Queue[str | None] = queue.Queue()

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "tgcrm", "up", "--state-dir", str(self.state_dir),
                "--api-port", str(self.api_port), "--crm-port", str(self.crm_port), "--db-port", str(self.db_port),
                *extra]

    def start(self, *extra: str, timeout: float = 180.0) -> dict[str, str]:
        self.values = {}
        self.stdout_lines = []
        self._lines = queue.Queue()
        log = self.log_path.open("a")
        self.process = subprocess.Popen(self.command(*extra), stdout=subprocess.PIPE, stderr=log, text=True,
                                        env={**hermetic_env(), **self.env}, cwd=self.state_dir.parent)
        log.close()
        threading.Thread(target=self._read, args=(self.process, self._lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"tgcrm up exited with {self.process.wait()} before READY:\n{self.log_text()}")
            if line == "READY":
                return self.values
            name, sep, value = line.partition("=")
            if sep:
                self.values[name] = value
        self.stop(signal.SIGKILL)
        raise AssertionError(f"tgcrm up was not READY within {timeout}s:\n{self.log_text()}")

    def _read(self, process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        # Its own queue, not `self._lines`: the reader of a stopped process may reach the end of its output after
        # the next start made a new queue, and its None would read as the new process having exited.
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            self.stdout_lines.append(line)
            lines.put(line)
        lines.put(None)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def wait_for_log(self, text: str, timeout: float = 60.0, after: int = 0) -> None:
        """Until `text` appears in the stack's stderr past character `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path.read_text(errors="replace")[after:]:
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the stack's output within {timeout}s:\n{self.log_text()}")

    def log_size(self) -> int:
        return len(self.log_path.read_text(errors="replace")) if self.log_path.exists() else 0

    def descendants(self) -> list[psutil.Process]:
        assert self.process is not None
        return psutil.Process(self.process.pid).children(recursive=True)

    def child(self, marker: str) -> psutil.Process:
        """The direct child whose command line contains `marker` (e.g. "crm_server", "serve-api", "postgres")."""
        assert self.process is not None
        for child in psutil.Process(self.process.pid).children():
            if any(marker in part for part in child.cmdline()):
                return child
        raise AssertionError(f"no child process with {marker!r} in its command line")

    def stop(self, signum: int = signal.SIGINT, timeout: float = 90.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for process in self.descendants():
                process.kill()
            self.process.kill()
            self.process.wait()
            raise

    def client(self, token: str | None = None) -> httpx.Client:
        """HTTP to the API; with the demo user's JWT (and the anon key) unless another token is given."""
        token = token or self.values["DEMO_USER_JWT"]
        return httpx.Client(base_url=self.values["SUPABASE_URL"], timeout=60.0,
                            headers={"Authorization": f"Bearer {token}", "apikey": self.values["SUPABASE_ANON_KEY"]})

    def crm_admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.values["CRM_URL"], timeout=60.0,
                            headers={"X-API-Key": self.values["CRM_API_KEY"]})
