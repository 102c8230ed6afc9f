"""A `tgcrm` command as a real subprocess that announces itself on stdout (`NAME=value` lines, then a ready line),
with its stderr in a log file and a stop by signal, for tests that start the services one by one.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class AnnouncingProcess:
    def __init__(self, name: str, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        self.args = args
        self.cwd = cwd
        self.env = env
        self.values: dict[str, str] = {}
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, ready: str = "READY", timeout: float = 180.0) -> dict[str, str]:
        """Run `python -m tgcrm <args>` until it prints a line starting with `ready`; its NAME=value lines."""
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "tgcrm", *self.args], stdout=subprocess.PIPE,
                                            stderr=log, text=True, env=self.env, cwd=self.cwd)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"tgcrm {self.name} exited with {self.process.wait()}:\n{self.log_text()}")
            name, sep, value = line.partition("=")
            if sep:
                self.values[name] = value
            if line.startswith(ready):
                return self.values
        self.stop(signal.SIGKILL)
        raise AssertionError(f"tgcrm {self.name} did not print {ready!r} within {timeout}s:\n{self.log_text()}")

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            self._lines.put(raw.rstrip("\n"))
        self._lines.put(None)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)
