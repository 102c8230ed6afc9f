"""`tgcrm up`'s supervisor under repeated crashes: a child that dies is restarted every time (a restart budget only
slows it down), a crash while a restart is still checking health is noticed at once, and PostgreSQL is never stopped
because another child failed. One `tgcrm up` for the module, with short restart delays (TGCRM_RESTART_DELAY_*).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from tests.e2e.stack_process import StackProcess

pytestmark = pytest.mark.slow

# Production waits up to a minute between restarts once a child keeps crashing; the test does not have minutes.
FAST_RESTARTS = {"TGCRM_RESTART_DELAY_FIRST_SECONDS": "0.2", "TGCRM_RESTART_DELAY_MAX_SECONDS": "1"}
RESTART_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def stack() -> Iterator[StackProcess]:
    with tempfile.TemporaryDirectory(prefix="tgcrm-supervisor-") as directory:
        process = StackProcess(Path(directory) / "state", name="supervisor", env=FAST_RESTARTS)
        process.start()
        try:
            yield process
        finally:
            if process.process is not None and process.process.poll() is None:
                process.stop()


def postmaster(stack: StackProcess) -> psutil.Process:
    """PostgreSQL's postmaster, by the pid it wrote into its data directory (and still running)."""
    pid = int((stack.state_dir / "postgres" / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
    process = psutil.Process(pid)
    assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    return process


def api_child(stack: StackProcess, other_than: int | None = None, timeout: float = RESTART_TIMEOUT) -> psutil.Process:
    """The API child (`serve-api`), waiting for a new one when `other_than` names the one before."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            child = stack.child("serve-api")
            if child.pid != other_than and child.status() != psutil.STATUS_ZOMBIE:
                return child
        except (AssertionError, psutil.Error):
            pass
        assert time.monotonic() < deadline, f"no new API child within {timeout}s:\n{stack.log_text()}"
        time.sleep(0.05)


def api_answers(stack: StackProcess) -> bool:
    try:
        return httpx.get(f"{stack.values['SUPABASE_URL']}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_four_api_crashes_in_a_row_are_each_restarted_and_postgres_keeps_running(stack: StackProcess) -> None:
    database = postmaster(stack)
    for crash in range(1, 5):
        api = api_child(stack)
        offset = stack.log_size()
        api.kill()
        stack.wait_for_log("api exited with code -9", after=offset, timeout=10)
        stack.wait_for_log("api is running again", after=offset, timeout=RESTART_TIMEOUT)
        assert api_child(stack, other_than=api.pid).pid != api.pid
        assert api_answers(stack), f"crash {crash}: the API does not answer after its restart"
        assert stack.process is not None and stack.process.poll() is None, f"crash {crash} stopped the stack"
        # The same postmaster throughout: PostgreSQL was never stopped or restarted.
        assert postmaster(stack).pid == database.pid and postmaster(stack).create_time() == database.create_time()
    log = stack.log_text()
    assert "stopping the whole stack" not in log
    # Each restart says why: the exit code and the signal that killed it.
    assert log.count("api exited with code -9 (SIGKILL)") >= 4, log


def test_a_crash_during_a_restarts_health_checks_is_noticed_within_seconds(stack: StackProcess) -> None:
    database = postmaster(stack)
    dsn = stack.values["DATABASE_URL"]
    # One of the API's health checks (a REST read as service_role) now fails, so a restart stays in its checks.
    asyncio.run(_execute(dsn, "REVOKE SELECT ON public.organizations FROM service_role"))
    try:
        first = api_child(stack)
        offset = stack.log_size()
        first.kill()
        stack.wait_for_log("api exited with code -9", after=offset, timeout=10)
        checking = api_child(stack, other_than=first.pid)
        deadline = time.monotonic() + RESTART_TIMEOUT
        while not api_answers(stack):  # it listens (READY): the supervisor is past READY, in the health checks
            assert time.monotonic() < deadline, stack.log_text()
            time.sleep(0.05)
        time.sleep(1.0)
        assert "api is running again" not in stack.log_text()[offset:]
        offset = stack.log_size()
        checking.kill()
        killed_at = time.monotonic()
        # Before, the restart went on polling the dead child's URLs until their 120 s timeout.
        stack.wait_for_log("api exited with code -9", after=offset, timeout=5)
        assert time.monotonic() - killed_at < 5
    finally:
        asyncio.run(_execute(dsn, "GRANT SELECT ON public.organizations TO service_role"))
    stack.wait_for_log("api is running again", after=offset, timeout=RESTART_TIMEOUT)
    assert api_answers(stack)
    assert postmaster(stack).pid == database.pid and postmaster(stack).create_time() == database.create_time()
