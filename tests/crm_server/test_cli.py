"""The command line: `keys create` against a running server's store, and a server that refuses to start unconfigured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.crm_server.conftest import PROJECT_B
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
    from crm_server.cli import announce

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
