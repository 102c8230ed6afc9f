"""`python -m functions` (what `tgcrm functions` runs): the host alone, configured by the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.net import free_port, wait_http

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def standalone_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("functions-cli") / "functions.log"


@pytest.fixture(scope="module")
def standalone(api_server: str, local_keys: Any, standalone_log: Path) -> Iterator[str]:
    """The host as a deployment configured before sealing existed would run it: no FUNCTIONS_SETTINGS_KEY."""
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("SUPABASE_", "FUNCTIONS_", "WAPPI_", "CRM_"))}
    env.update({"SUPABASE_URL": api_server, "SUPABASE_SERVICE_ROLE_KEY": local_keys.service_role_key,
                "SUPABASE_JWT_SECRET": local_keys.jwt_secret, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)})
    log_path = standalone_log
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "functions", "--port", str(port)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=log_path.parent)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=30, expect_status=200)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)
    announced = log_path.read_text().splitlines()
    assert f"FUNCTIONS_URL=http://127.0.0.1:{port}/functions/v1" in announced
    assert "READY" in announced  # printed once it serves, as `tgcrm db up` and `tgcrm server` do


def test_the_standalone_host_serves_the_functions(standalone: str) -> None:
    providers = httpx.get(f"{standalone}/functions/v1/telegram-providers")
    assert providers.status_code == 200 and providers.json()["success"] is True
    # A real database round trip: the webhook looks the key up and finds nothing.
    webhook = httpx.post(f"{standalone}/functions/v1/telegram-crm-webhook?key=unknown", json={})
    assert webhook.status_code == 404 and webhook.json()["code"] == "INTEGRATION_NOT_FOUND"
    assert httpx.post(f"{standalone}/functions/v1/telegram-send", json={}).status_code == 401


def test_without_a_settings_key_it_serves_and_warns_once_that_secrets_are_in_clear(
        standalone: str, standalone_log: Path) -> None:
    assert httpx.get(f"{standalone}/health").status_code == 200
    warnings = [line for line in standalone_log.read_text().splitlines() if "FUNCTIONS_SETTINGS_KEY" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "in clear" in warnings[0]


def test_a_malformed_settings_key_is_refused_at_start_without_echoing_it(tmp_path: Path, local_keys: Any) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SUPABASE_", "FUNCTIONS_"))}
    env.update({"SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": local_keys.service_role_key,
                "FUNCTIONS_SETTINGS_KEY": "not-a-fernet-key-but-maybe-close", "PYTHONPATH": str(ROOT)})
    result = subprocess.run([sys.executable, "-m", "functions", "--port", str(free_port())], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "FUNCTIONS_SETTINGS_KEY" in result.stdout
    assert "not-a-fernet-key" not in result.stdout + result.stderr


def test_missing_settings_are_reported_not_a_traceback(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SUPABASE_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-m", "functions", "--port", str(free_port())], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "SUPABASE_URL" in result.stdout and "SUPABASE_SERVICE_ROLE_KEY" in result.stdout
