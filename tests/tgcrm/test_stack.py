"""The supervisor's parts without a whole stack: restart budgets, one child's start/announce/stop and its restarts,
and the checks `tgcrm up` makes before starting anything (state folder lock, --fresh guard, busy ports)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tgcrm.stack import (
    ChildService,
    RestartBudget,
    RestartPolicy,
    StackError,
    Supervised,
    child_environment,
    exit_cause,
)
from tgcrm.up_command import (
    FUNCTIONS_SETTINGS_KEY_FILE,
    LOCK_FILE,
    UpOptions,
    claim_state_dir,
    ensure_functions_settings_key,
    port_problem,
)
from tests.helpers.net import free_port, free_ports


def test_the_restart_budget_slows_restarts_down_and_never_refuses_one() -> None:
    budget = RestartBudget(RestartPolicy(free_restarts=3, window=60, first_delay=1, max_delay=8))
    assert [budget.next_delay(now) for now in (0, 1, 2)] == [0, 0, 0]
    # Beyond the free ones, each waits twice as long as the one before, up to the cap, for as long as it takes.
    assert [budget.next_delay(now) for now in (3, 4, 5, 6, 7, 8)] == [1, 2, 4, 8, 8, 8]
    assert budget.total == 9
    # Once the restarts are older than the window, a restart happens at once again.
    assert budget.next_delay(100) == 0


def test_restart_delays_come_from_the_environment_and_bad_values_are_named() -> None:
    policy = RestartPolicy.from_environment({"TGCRM_RESTART_DELAY_FIRST_SECONDS": "0.2",
                                             "TGCRM_RESTART_DELAY_MAX_SECONDS": "1"})
    assert (policy.first_delay, policy.max_delay) == (0.2, 1.0)
    assert RestartPolicy.from_environment({}) == RestartPolicy()
    for bad in ({"TGCRM_RESTART_DELAY_FIRST_SECONDS": "soon"}, {"TGCRM_RESTART_DELAY_MAX_SECONDS": "-1"},
                {"TGCRM_RESTART_DELAY_FIRST_SECONDS": "5", "TGCRM_RESTART_DELAY_MAX_SECONDS": "1"}):
        with pytest.raises(StackError, match="TGCRM_RESTART_DELAY"):
            RestartPolicy.from_environment(bad)


def test_an_exit_is_described_with_its_code_and_signal() -> None:
    assert exit_cause(3) == "exited with code 3"
    assert exit_cause(-9) == "exited with code -9 (SIGKILL)"
    assert exit_cause(-15) == "exited with code -15 (SIGTERM)"


def _python_child(name: str, script: str, secret: str = "") -> ChildService:
    return ChildService(name, [sys.executable, "-c", script], child_environment(), hidden_values=lambda: [secret])


async def test_a_child_announces_values_before_ready_and_hides_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    child = _python_child("demo", "import time\nprint('CRM_URL=http://x')\nprint('READY', flush=True)\n"
                                  "print('token s3cr3t in a log line', flush=True)\ntime.sleep(30)", secret="s3cr3t")
    assert await child.start(timeout=30) == {"CRM_URL": "http://x"}
    await asyncio.sleep(0.5)
    await child.stop(timeout=5)
    assert child.returncode is not None
    output = capsys.readouterr().err
    assert "demo | token *** in a log line" in output
    assert "s3cr3t" not in output and "CRM_URL" not in output


async def test_a_child_that_exits_while_starting_is_reported_with_its_output() -> None:
    child = _python_child("broken", "import sys\nprint('config is wrong')\nsys.exit(3)")
    with pytest.raises(StackError, match=r"broken exited with code 3 while starting(.|\n)*config is wrong"):
        await child.start(timeout=30)


class _Unhealthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def unhealthy_url() -> Iterator[str]:
    """A health check that never passes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_child_that_dies_during_its_health_checks_is_noticed_at_once(unhealthy_url: str) -> None:
    service = Supervised(_python_child("flaky", "import time, sys\nprint('READY', flush=True)\ntime.sleep(0.5)\n"
                                                "sys.exit(7)"), [(unhealthy_url, {})])
    started = time.monotonic()
    with pytest.raises(StackError, match="flaky exited with code 7 during its health checks"):
        await service.start(timeout=60)
    assert time.monotonic() - started < 5  # not the checks' 60 s


async def test_a_child_that_keeps_dying_is_restarted_every_time(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    starts = tmp_path / "starts"
    service = Supervised(_python_child("crashy", f"import sys, time\nopen({str(starts)!r}, 'a').write('x')\n"
                                                 "print('READY', flush=True)\ntime.sleep(0.1)\nsys.exit(1)"), [])
    await service.start(timeout=30)
    watching = asyncio.create_task(service.keep_running(RestartPolicy(free_restarts=1, first_delay=0.01,
                                                                      max_delay=0.05)))
    try:
        deadline = time.monotonic() + 60
        while len(starts.read_text()) < 6:  # five restarts: beyond any budget
            assert not watching.done() and time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await service.child.stop(timeout=5)
    output = capsys.readouterr().err
    assert "crashy exited with code 1; restarting it (restart 1)" in output
    assert "each waits longer" in output and "crashy is running again" in output


def test_fresh_refuses_a_folder_that_is_not_a_state_folder(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    with pytest.raises(StackError, match="does not look like a tgcrm state folder"):
        claim_state_dir(tmp_path, fresh=True)
    assert (tmp_path / "thesis.tex").exists()


def test_fresh_empties_a_state_folder_and_a_second_stack_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "jwt_secret").write_text("old")
    (state / "postgres").mkdir()
    lock = claim_state_dir(state, fresh=True)
    try:
        assert sorted(path.name for path in state.iterdir()) == sorted([LOCK_FILE, ".tgcrm-state"])
        with pytest.raises(StackError, match="another `tgcrm up` is running"):
            claim_state_dir(state, fresh=False)
    finally:
        lock.close()


def test_the_functions_settings_key_is_made_once_and_kept_private(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUNCTIONS_SETTINGS_KEY", raising=False)
    key = ensure_functions_settings_key(tmp_path)
    Fernet(key)
    key_file = tmp_path / FUNCTIONS_SETTINGS_KEY_FILE
    assert key_file.read_text() == key and key_file.stat().st_mode & 0o777 == 0o600
    # The next start opens what the first one sealed.
    assert ensure_functions_settings_key(tmp_path) == key


def test_a_configured_functions_settings_key_wins_and_a_broken_file_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configured = Fernet.generate_key().decode()
    monkeypatch.setenv("FUNCTIONS_SETTINGS_KEY", configured)
    assert ensure_functions_settings_key(tmp_path) == configured
    monkeypatch.delenv("FUNCTIONS_SETTINGS_KEY")
    (tmp_path / FUNCTIONS_SETTINGS_KEY_FILE).write_text("garbage")
    with pytest.raises(StackError, match=FUNCTIONS_SETTINGS_KEY_FILE):
        ensure_functions_settings_key(tmp_path)


def _options(api_port: int, crm_port: int, db_port: int) -> UpOptions:
    return UpOptions(host="127.0.0.1", api_port=api_port, crm_port=crm_port, db_port=db_port,
                     state_dir=Path("/nonexistent"), database_url=None, sandbox=True, log_level="warning")


def test_a_busy_port_is_named_with_the_flag_that_changes_it() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        api_port, db_port = free_ports(2)
        problem = port_problem(_options(api_port, busy, db_port))
    assert problem is not None and f"port {busy}" in problem and "--crm-port" in problem
    assert port_problem(_options(*free_ports(3))) is None


def test_two_services_on_one_port_are_refused() -> None:
    port = free_port()
    problem = port_problem(_options(port, port, free_port()))
    assert problem is not None and "--crm-port" in problem
