"""The supervisor's parts without a whole stack: restart budgets, one child's start/announce/stop, and the checks
`tgcrm up` makes before starting anything (state folder lock, --fresh guard, busy ports)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tgcrm.stack import ChildService, RestartBudget, StackError, child_environment
from tgcrm.up_command import (
    FUNCTIONS_SETTINGS_KEY_FILE,
    LOCK_FILE,
    UpOptions,
    claim_state_dir,
    ensure_functions_settings_key,
    port_problem,
)
from tests.helpers.net import free_port


def test_restart_budget_allows_a_few_restarts_per_window() -> None:
    budget = RestartBudget(limit=3, window=60)
    assert [budget.allow(now) for now in (0, 1, 2)] == [True, True, True]
    assert budget.allow(3) is False
    # Once the first restarts are older than the window, the child may be restarted again.
    assert budget.allow(61.5) is True


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
        problem = port_problem(_options(free_port(), busy, free_port()))
    assert problem is not None and f"port {busy}" in problem and "--crm-port" in problem
    assert port_problem(_options(free_port(), free_port(), free_port())) is None


def test_two_services_on_one_port_are_refused() -> None:
    port = free_port()
    problem = port_problem(_options(port, port, free_port()))
    assert problem is not None and "--crm-port" in problem
