"""The local stack as one supervised process tree: embedded PostgreSQL, the API process and crm_server.

Started in order, watched while running (a child that dies is reported and restarted a bounded number of times, or
the whole stack stops with a message), and stopped in reverse order on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

READY_MARKER = "READY"
# A child may die this many times within RESTART_WINDOW_SECONDS and be restarted; one more stops the stack.
MAX_RESTARTS = 3
RESTART_WINDOW_SECONDS = 300.0
CHILD_READY_TIMEOUT = 120.0
CHILD_STOP_TIMEOUT = 15.0
OUTPUT_TAIL_LINES = 40

_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """The stack could not start, or a part of it failed for good; the message says which and why."""


def report(message: str) -> None:
    """Status lines go to stderr: stdout carries only the NAME=value lines and READY, for scripts to read."""
    print(f"tgcrm: {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    """Runs in the child before exec: if the supervisor is killed outright, its children get SIGTERM (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class RestartBudget:
    """How many restarts a child has left: MAX_RESTARTS within a sliding window."""

    limit: int = MAX_RESTARTS
    window: float = RESTART_WINDOW_SECONDS
    restarts: deque[float] = field(default_factory=deque)

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        while self.restarts and now - self.restarts[0] > self.window:
            self.restarts.popleft()
        if len(self.restarts) >= self.limit:
            return False
        self.restarts.append(now)
        return True

    @property
    def used(self) -> int:
        return len(self.restarts)


class ChildService:
    """One supervised child process: its command, environment, the NAME=value lines it prints before READY, and
    its output forwarded to our stderr with a `name |` prefix (the last lines are kept for failure messages)."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                 hidden_values: Callable[[], Sequence[str]] = lambda: ()) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.process: asyncio.subprocess.Process | None = None
        self.announced: dict[str, str] = {}
        self.tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
        self.budget = RestartBudget()
        self._hidden_values = hidden_values
        self._ready = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process else None

    async def start(self, timeout: float = CHILD_READY_TIMEOUT) -> dict[str, str]:
        """Start the child and wait for its READY line; returns the NAME=value lines it printed before."""
        self.announced = {}
        self._ready = asyncio.Event()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session: Ctrl-C in the terminal reaches only the supervisor, which stops children in order.
            start_new_session=True, preexec_fn=_die_with_parent)
        self._reader = asyncio.create_task(self._read_output(self.process))
        ready = asyncio.create_task(self._ready.wait())
        exited = asyncio.create_task(self.process.wait())
        try:
            await asyncio.wait({ready, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
        if self._ready.is_set():
            return dict(self.announced)
        if self.process.returncode is None:
            await self.stop()
            raise StackError(f"{self.name} did not become ready within {timeout:.0f} s{self.tail_text()}")
        await self._drain()
        raise StackError(f"{self.name} exited with code {self.process.returncode} while starting{self.tail_text()}")

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        await self._drain()
        return code

    async def stop(self, timeout: float = CHILD_STOP_TIMEOUT) -> None:
        """SIGTERM (graceful for uvicorn), then SIGKILL after `timeout`."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                report(f"{self.name} did not stop within {timeout:.0f} s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        await self._drain()

    def tail_text(self) -> str:
        if not self.tail:
            return ""
        return f". Its last output:\n    " + "\n    ".join(self.tail)

    async def _drain(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                # Shielded: a cancelled waiter must not cancel the reader that keeps the pipe drained.
                await asyncio.wait_for(asyncio.shield(self._reader), 5)

    def _mask(self, line: str) -> str:
        for value in self._hidden_values():
            if value and value in line:
                line = line.replace(value, "***")
        return line

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            raw = await process.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip("\r\n")
            if not self._ready.is_set():
                if line == READY_MARKER:
                    self._ready.set()
                    continue
                name, sep, value = line.partition("=")
                if sep and name.isupper() and name.replace("_", "").isalnum():
                    # The child's own NAME=value lines (keys among them): parsed, never echoed.
                    self.announced[name] = value
                    continue
            shown = self._mask(line)
            self.tail.append(shown)
            print(f"{self.name} | {shown}", file=sys.stderr, flush=True)


async def wait_http_ok(url: str, timeout: float, headers: Mapping[str, str] | None = None) -> None:
    """Poll `url` until it answers 2xx."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with httpx.AsyncClient(timeout=5.0) as http:
        while time.monotonic() < deadline:
            try:
                response = await http.get(url, headers=dict(headers or {}))
                if response.is_success:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
    raise StackError(f"{url} did not answer within {timeout:.0f} s ({last})")


def python_module(module: str, *args: str) -> list[str]:
    """A child command running `module` with this interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]


def child_environment(**values: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(values)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def state_files_present(state_dir: Path) -> bool:
    """Whether `state_dir` looks like a tgcrm state folder (the guard before `--fresh` deletes it)."""
    markers = ("jwt_secret", "postgres", "env", "crm.sqlite3", ".tgcrm-state")
    return any((state_dir / marker).exists() for marker in markers)


@dataclass
class Supervised:
    """A child and how to tell it really serves: URLs that must answer 2xx (with headers) after its READY."""

    child: ChildService
    health_checks: list[tuple[str, Mapping[str, str]]]

    async def start(self) -> dict[str, str]:
        announced = await self.child.start()
        for url, headers in self.health_checks:
            await wait_http_ok(url, CHILD_READY_TIMEOUT, headers)
        return announced


class LocalStack:
    """PostgreSQL (via `LocalDatabase`, already prepared by the caller) plus supervised children."""

    def __init__(self, database: object, services: Sequence[Supervised]) -> None:
        # `database` is a supabase_local LocalDatabase; typed loosely so this module imports nothing heavy.
        self.database = database
        self.services = list(services)
        self.postgres_budget = RestartBudget()

    async def start(self) -> dict[str, dict[str, str]]:
        """Start every child concurrently; returns each one's announced NAME=value lines by name."""
        results = await asyncio.gather(*(service.start() for service in self.services), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise failures[0]
        return {service.child.name: result for service, result in zip(self.services, results)}  # type: ignore[misc]

    async def supervise(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: restart what dies (bounded); raises StackError when something fails for good."""
        while not stop.is_set():
            waiters = {asyncio.create_task(service.child.wait()): service for service in self.services}
            postgres = asyncio.create_task(self._postgres_exit())
            stopping = asyncio.create_task(stop.wait())
            done, pending = await asyncio.wait({*waiters, postgres, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            if stop.is_set():
                return
            recoveries = [self._restart(waiters[task]) for task in done if task in waiters]
            if postgres in done:
                recoveries.insert(0, self._restart_postgres())
            recovering = asyncio.gather(*recoveries)
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({recovering, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not recovering.done():
                recovering.cancel()
                with contextlib.suppress(asyncio.CancelledError, StackError):
                    await recovering
                return
            recovering.result()  # re-raises a StackError

    async def _restart(self, service: Supervised) -> None:
        child = service.child
        code = child.returncode
        while True:
            if not child.budget.allow():
                raise StackError(f"{child.name} exited with code {code} after {MAX_RESTARTS} restarts within "
                                 f"{RESTART_WINDOW_SECONDS:.0f} s; stopping the whole stack{child.tail_text()}")
            report(f"{child.name} exited with code {code}; restarting it (restart {child.budget.used} of "
                   f"{MAX_RESTARTS})")
            try:
                await service.start()
            except StackError as exc:
                report(f"restarting {child.name} failed: {exc}")
                await child.stop()
                code = child.returncode
                continue
            report(f"{child.name} is running again")
            return

    async def _postgres_exit(self) -> None:
        server = getattr(self.database, "server", None)
        if server is None:  # an external database (by URL): not ours to watch
            await asyncio.Event().wait()
        while server.is_running():
            await asyncio.sleep(0.5)

    async def _restart_postgres(self) -> None:
        server = self.database.server  # type: ignore[attr-defined]
        code = server.process.returncode if server.process else None
        while True:
            if not self.postgres_budget.allow():
                raise StackError(f"PostgreSQL exited with code {code} after {MAX_RESTARTS} restarts within "
                                 f"{RESTART_WINDOW_SECONDS:.0f} s; stopping the whole stack (see {server.log_file})")
            report(f"PostgreSQL exited with code {code}; restarting it (restart {self.postgres_budget.used} of "
                   f"{MAX_RESTARTS})")
            try:
                await asyncio.to_thread(server.restart)
            except Exception as exc:  # noqa: BLE001 - PostgresError or OSError: count it and try again
                report(f"restarting PostgreSQL failed: {exc}")
                continue
            report("PostgreSQL is running again")
            return

    async def stop(self) -> None:
        """Children in reverse start order, then PostgreSQL (fast shutdown: committed data stays)."""
        for service in reversed(self.services):
            await service.child.stop()
        await asyncio.to_thread(self.database.stop)  # type: ignore[attr-defined]
