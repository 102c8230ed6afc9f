"""The command line: `keys create` against a running server's store, and a server that refuses to start unconfigured.

`keys create` and `login` only use an existing server's state folder (found as `tgcrm up` finds it: `--state-dir`,
then TGCRM_STATE_DIR, then `.local` in the current directory); anywhere else they refuse and create nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.crm_server.conftest import PROJECT_A, PROJECT_B
from tests.crm_server.server_process import CrmServerProcess, hermetic_env, run_cli


def test_keys_create_admin_prints_a_key_that_reaches_every_project(crm_server: CrmServerProcess) -> None:
    key = run_cli("keys", "create", "--admin", state_dir=crm_server.state_dir).strip()
    assert key.startswith("tgcrm_") and "\n" not in key
    client = crm_server.client(key)
    try:
        assert client.get("/telegram/status", params={"project_id": PROJECT_B}).status_code == 200
        assert client.get("/sandbox/requests").status_code == 200
    finally:
        client.close()


def test_keys_create_needs_a_project_or_admin(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crm_server", "keys", "create", "--state-dir", str(tmp_path)],
        capture_output=True, text=True, env=hermetic_env(), cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 2
    assert "--project" in result.stderr


def test_the_server_refuses_to_start_without_telegram_credentials_or_the_sandbox(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crm_server", "server", "--state-dir", str(tmp_path), "--port", "1"],
        capture_output=True, text=True, env=hermetic_env(), cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 2
    assert "TELEGRAM_API_ID" in result.stderr and "--sandbox" in result.stderr
    assert "READY" not in result.stdout


def test_announced_lines_are_written_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # Unbuffered, print() wrote "READY" and "\n" apart; a DEBUG log line between them hid READY from the parent
    # (found as an intermittent start timeout by the reliability suite's secrets test).
    from safeguards.serving import announce

    writes: list[str] = []

    class Recorder:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr("sys.stdout", Recorder())
    announce("READY")
    assert writes == ["READY\n"]


# --- the state folder and the project id of `keys create` and `login` ------------------------------------------------

ORGANIZATION_ID = "8d3c6f0e-5b1a-4c2d-9e7f-0a1b2c3d4e5f"
KEYS_CREATE = ("keys", "create", "--project", ORGANIZATION_ID)
LOGIN = ("login", "--sandbox", "--project", ORGANIZATION_ID, "--phone", "+15550001234")


def tgcrm(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tgcrm <args>` as a user types it in `cwd`; no terminal input (an old `login` asked for a code and got EOF)."""
    return subprocess.run([sys.executable, "-m", "tgcrm", *args], capture_output=True, text=True,
                          env=hermetic_env(env), cwd=cwd, stdin=subprocess.DEVNULL, timeout=60)


def assert_refused_in_one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", [KEYS_CREATE, LOGIN], ids=["keys create", "login"])
def test_run_outside_a_state_folder_it_refuses_and_creates_nothing(tmp_path: Path, command: tuple[str, ...]) -> None:
    result = tgcrm(*command, cwd=tmp_path)
    assert_refused_in_one_line(result, str(tmp_path.resolve() / ".local"), "--state-dir", "TGCRM_STATE_DIR")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_state_folder_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = tgcrm(*KEYS_CREATE, "--state-dir", str(tmp_path), cwd=tmp_path)
    assert_refused_in_one_line(result, str(tmp_path.resolve()), "not a tgcrm state folder")
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_login_refuses_a_store_without_the_session_key_the_server_encrypts_with(tmp_path: Path) -> None:
    # A session sealed with a key made up here would be unreadable to the server that has the real one.
    (tmp_path / "crm.sqlite3").touch()
    result = tgcrm(*LOGIN, "--state-dir", str(tmp_path), cwd=tmp_path)
    assert_refused_in_one_line(result, "crm_session.key", "CRM_SESSION_KEY")
    assert [path.name for path in tmp_path.iterdir()] == ["crm.sqlite3"]


def test_a_sandbox_login_refuses_a_state_folder_whose_server_never_ran_the_sandbox(tmp_path: Path) -> None:
    # Logged in to a simulated Telegram of its own, the account would be unknown to the server's.
    (tmp_path / "crm.sqlite3").touch()
    (tmp_path / "crm_session.key").write_bytes(Fernet.generate_key())
    result = tgcrm(*LOGIN, "--state-dir", str(tmp_path), cwd=tmp_path)
    assert_refused_in_one_line(result, str(tmp_path.resolve() / "sandbox_world.sqlite3"), "--sandbox")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["crm.sqlite3", "crm_session.key"]


def test_keys_create_finds_the_server_state_folder_through_tgcrm_state_dir(
        crm_server: CrmServerProcess, tmp_path: Path) -> None:
    result = tgcrm("keys", "create", "--project", PROJECT_A, cwd=tmp_path,
                   env={"TGCRM_STATE_DIR": str(crm_server.state_dir)})
    assert result.returncode == 0, result.stderr
    client = crm_server.client(result.stdout.strip())
    try:
        assert client.get("/telegram/status", params={"project_id": PROJECT_A}).status_code == 200
    finally:
        client.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [KEYS_CREATE, LOGIN], ids=["keys create", "login"])
def test_a_project_that_is_not_an_organization_uuid_is_refused(
        crm_server: CrmServerProcess, tmp_path: Path, command: tuple[str, ...]) -> None:
    arguments = [("acme" if value == ORGANIZATION_ID else value) for value in command]
    result = tgcrm(*arguments, "--state-dir", str(crm_server.state_dir), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert "--project" in result.stderr and "UUID" in result.stderr and "'acme'" in result.stderr


def test_a_project_uuid_in_capitals_binds_the_key_to_the_organization_id(crm_server: CrmServerProcess) -> None:
    # Organization ids reach crm_server in PostgreSQL's form (lowercase); a key bound to another spelling never matched.
    key = run_cli("keys", "create", "--project", PROJECT_A.upper(), state_dir=crm_server.state_dir).strip()
    client = crm_server.client(key)
    try:
        assert client.get("/telegram/status", params={"project_id": PROJECT_A}).status_code == 200
    finally:
        client.close()
