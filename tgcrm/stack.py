"""The local stack as one supervised process tree: embedded PostgreSQL, the API process and crm_server.

Started in order, watched while running (each child and PostgreSQL on its own: one that dies is reported with its
exit code or signal and restarted, again and again, more slowly when it keeps dying, while the others run on), and
stopped in reverse order on Ctrl-C or SIGTERM, the only way the stack stops once it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

READY_MARKER = "READY"
# The first FREE_RESTARTS within RESTART_WINDOW_SECONDS happen at once; each further one waits longer, doubling from
# RESTART_DELAY_FIRST_SECONDS up to RESTART_DELAY_MAX_SECONDS (TGCRM_RESTART_DELAY_FIRST_SECONDS / _MAX_SECONDS).
# There is no last restart: a stack that gives up needs a person to bring it back, and stopping PostgreSQL because
# the API keeps crashing would take down what still works.
FREE_RESTARTS = 3
RESTART_WINDOW_SECONDS = 300.0
RESTART_DELAY_FIRST_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 60.0
# The supervisor's two knobs: (environment variable, RestartPolicy attribute, purpose for docs/configuration.md).
RESTART_DELAY_VARIABLES = (
    ("TGCRM_RESTART_DELAY_FIRST_SECONDS", "first_delay",
     "Delay before a restart once the first three within five minutes are spent; each further one doubles."),
    ("TGCRM_RESTART_DELAY_MAX_SECONDS", "max_delay",
     "Longest delay between two restarts of a service that keeps dying."),
)
POSTGRES_POLL_SECONDS = 0.5
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


def exit_cause(code: int | None) -> str:
    """How a process ended, as the restart report says it: `exited with code 3`, `exited with code -9 (SIGKILL)`."""
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"exited with code {code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"exited with code {code} (signal {-code})"
    return f"exited with code {code}"


@dataclass(frozen=True)
class RestartPolicy:
    """How soon a dead child is restarted: at once for the first `free_restarts` within `window` seconds, then after
    a delay doubling from `first_delay` up to `max_delay`. Never "no more": the policy only slows restarts down."""

    free_restarts: int = FREE_RESTARTS
    window: float = RESTART_WINDOW_SECONDS
    first_delay: float = RESTART_DELAY_FIRST_SECONDS
    max_delay: float = RESTART_DELAY_MAX_SECONDS

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> RestartPolicy:
        """TGCRM_RESTART_DELAY_FIRST_SECONDS and TGCRM_RESTART_DELAY_MAX_SECONDS (tests shorten them)."""
        values: dict[str, float] = {}
        for name, attribute, _ in RESTART_DELAY_VARIABLES:
            raw = environ.get(name, "").strip()
            if not raw:
                continue
            try:
                values[attribute] = float(raw)
            except ValueError:
                raise StackError(f"{name} must be a number of seconds, not {raw!r}") from None
            if not 0 <= values[attribute] <= 3600:
                raise StackError(f"{name} must be between 0 and 3600 seconds, not {raw}")
        policy = cls(**values)
        if policy.max_delay < policy.first_delay:
            raise StackError("TGCRM_RESTART_DELAY_MAX_SECONDS must not be below TGCRM_RESTART_DELAY_FIRST_SECONDS")
        return policy


@dataclass
class RestartBudget:
    """One child's recent restarts under a RestartPolicy: how long the next one waits. It never refuses one."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    restarts: deque[float] = field(default_factory=deque)
    total: int = 0

    def next_delay(self, now: float | None = None) -> float:
        """Counts a restart made now and returns how many seconds to wait before making it."""
        now = time.monotonic() if now is None else now
        while self.restarts and now - self.restarts[0] > self.policy.window:
            self.restarts.popleft()
        beyond = len(self.restarts) - self.policy.free_restarts
        self.restarts.append(now)
        self.total += 1
        if beyond < 0:
            return 0.0
        return min(self.policy.max_delay, self.policy.first_delay * 2 ** min(beyond, 32))

    def describe(self, delay: float) -> str:
        """The restart report's tail: `restarting it (restart 2)`, or with the delay and why there is one."""
        if delay <= 0:
            return f"restarting it (restart {self.total})"
        return (f"restarting it in {delay:.1f} s (restart {self.total}; more than {self.policy.free_restarts} "
                f"within {self.policy.window:.0f} s, so each waits longer)")


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
        spawning = asyncio.ensure_future(asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session: Ctrl-C in the terminal reaches only the supervisor, which stops children in order.
            start_new_session=True, preexec_fn=_die_with_parent))
        try:
            self.process = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # Stopped while spawning: keep hold of the process, so `stop()` ends it instead of leaving it running.
            self.process = await spawning
            raise
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
        raise StackError(f"{self.name} {exit_cause(self.process.returncode)} while starting{self.tail_text()}")

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

    async def start(self, timeout: float = CHILD_READY_TIMEOUT) -> dict[str, str]:
        announced = await self.child.start(timeout)
        await self._until_healthy(timeout)
        return announced

    async def _until_healthy(self, timeout: float) -> None:
        """The health checks, raced against the child exiting: a crash during them is noticed at once (polling
        a dead child's URLs would only end with their timeout)."""
        assert self.child.process is not None
        checking = asyncio.create_task(self._check_health(timeout))
        exited = asyncio.create_task(self.child.process.wait())
        try:
            await asyncio.wait({checking, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (checking, exited):
                task.cancel()
            await asyncio.gather(checking, exited, return_exceptions=True)
        if self.child.returncode is not None:
            raise StackError(f"{self.child.name} {exit_cause(self.child.returncode)} during its health checks")
        checking.result()  # re-raises a StackError: a check did not pass in time

    async def _check_health(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for url, headers in self.health_checks:
            await wait_http_ok(url, max(deadline - time.monotonic(), 1.0), headers)

    async def keep_running(self, policy: RestartPolicy) -> None:
        """Until cancelled: wait for the child to exit, report how, restart it (after the budget's delay) and check
        its health, again whenever it dies, including while it is still starting."""
        child, budget = self.child, RestartBudget(policy)
        cause: str | None = None  # set when the last restart failed: the child is already stopped
        while True:
            if cause is None:
                cause = f"{child.name} {exit_cause(await child.wait())}"
            delay = budget.next_delay()
            report(f"{cause}; {budget.describe(delay)}")
            await asyncio.sleep(delay)
            try:
                await self.start()
            except Exception as exc:  # noqa: BLE001 - StackError, or OSError from spawning: try again, later
                report(f"restarting {child.name} failed: {exc}")
                await child.stop()
                cause = f"{child.name} did not start"
                continue
            cause = None
            report(f"{child.name} is running again")


@dataclass
class SupervisedPostgres:
    """The embedded PostgreSQL server (a supabase_local EmbeddedPostgres), restarted whenever it exits."""

    server: object

    async def keep_running(self, policy: RestartPolicy) -> None:
        server, budget = self.server, RestartBudget(policy)
        cause: str | None = None
        while True:
            if cause is None:
                while server.is_running():  # type: ignore[attr-defined]
                    await asyncio.sleep(POSTGRES_POLL_SECONDS)
                process = server.process  # type: ignore[attr-defined]
                cause = f"PostgreSQL {exit_cause(process.returncode if process else None)}"
            delay = budget.next_delay()
            report(f"{cause}; {budget.describe(delay)}; its log: {server.log_file}")  # type: ignore[attr-defined]
            await asyncio.sleep(delay)
            restarting = asyncio.ensure_future(asyncio.to_thread(server.restart))  # type: ignore[attr-defined]
            try:
                await asyncio.shield(restarting)
            except asyncio.CancelledError:
                # A thread cannot be cancelled: let it finish, so stopping the stack then stops that PostgreSQL.
                with contextlib.suppress(Exception):
                    await restarting
                raise
            except Exception as exc:  # noqa: BLE001 - PostgresError or OSError: try again, later
                report(f"restarting PostgreSQL failed: {exc}")
                cause = "PostgreSQL did not start"
                continue
            cause = None
            report("PostgreSQL is running again")


class LocalStack:
    """PostgreSQL (via `LocalDatabase`, already prepared by the caller) plus supervised children."""

    def __init__(self, database: object, services: Sequence[Supervised],
                 restart_policy: RestartPolicy | None = None) -> None:
        # `database` is a supabase_local LocalDatabase; typed loosely so this module imports nothing heavy.
        self.database = database
        self.services = list(services)
        self.restart_policy = restart_policy or RestartPolicy()

    async def start(self) -> dict[str, dict[str, str]]:
        """Start every child concurrently; returns each one's announced NAME=value lines by name."""
        results = await asyncio.gather(*(service.start() for service in self.services), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise failures[0]
        return {service.child.name: result for service, result in zip(self.services, results)}  # type: ignore[misc]

    def _watchers(self) -> dict[str, Callable[[], Awaitable[None]]]:
        watchers: dict[str, Callable[[], Awaitable[None]]] = {
            service.child.name: functools.partial(service.keep_running, self.restart_policy)
            for service in self.services}
        server = getattr(self.database, "server", None)
        if server is not None:  # None: an external database (by URL), not ours to watch
            watchers["PostgreSQL"] = functools.partial(SupervisedPostgres(server).keep_running, self.restart_policy)
        return watchers

    async def supervise(self, stop: asyncio.Event) -> None:
        """Until `stop` is set: every child and PostgreSQL watched at once, each restarted whenever it dies. Nothing
        here stops the stack; a watcher that fails (a bug) is reported and started again."""
        watchers = self._watchers()
        running = {asyncio.create_task(watch(), name=f"watch-{name}"): name for name, watch in watchers.items()}
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                done, _ = await asyncio.wait({stopping, *running}, return_when=asyncio.FIRST_COMPLETED)
                for task in done - {stopping}:
                    name = running.pop(task)
                    problem = "cancelled" if task.cancelled() else repr(task.exception())
                    report(f"watching {name} failed ({problem}); watching it again")
                    running[asyncio.create_task(watchers[name](), name=f"watch-{name}")] = name
        finally:
            stopping.cancel()
            for task in running:
                task.cancel()
            await asyncio.gather(stopping, *running, return_exceptions=True)

    async def stop(self) -> None:
        """Children in reverse start order, then PostgreSQL (fast shutdown: committed data stays)."""
        for service in reversed(self.services):
            await service.child.stop()
        await asyncio.to_thread(self.database.stop)  # type: ignore[attr-defined]
