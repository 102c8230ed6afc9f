"""Behind a reverse proxy: crm_server and `tgcrm functions` believe `X-Forwarded-Proto`/`-For` only from the peers
CRM_TRUSTED_PROXIES / FUNCTIONS_TRUSTED_PROXIES name. Seen where it matters: the address their OpenAPI description
gives clients (https behind a TLS proxy) and the client address in the access log."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.crm_server.server_process import CrmServerProcess
from tests.crm_server.server_process import hermetic_env as crm_env
from tests.e2e.stack_process import hermetic_env
from tests.helpers.net import free_port

FORWARDED = {"Host": "crm.example.com", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, CrmServerProcess]]:
    """One crm_server that trusts its loopback peer, and one that trusts only a network the test is not in."""
    with tempfile.TemporaryDirectory(prefix="tgcrm-proxy-") as directory:
        started = {
            "trusted": CrmServerProcess(Path(directory) / "trusted", name="proxy",
                                        env={"CRM_TRUSTED_PROXIES": "127.0.0.1", "CRM_LOG_LEVEL": "info"}),
            "untrusted": CrmServerProcess(Path(directory) / "untrusted", name="proxy",
                                          env={"CRM_TRUSTED_PROXIES": "10.0.0.0/8", "CRM_LOG_LEVEL": "info"}),
        }
        for server in started.values():
            server.start()
        try:
            yield started
        finally:
            for server in started.values():
                server.stop()


def access_log(server: CrmServerProcess) -> str:
    """The server's log once it holds the access line of the request just answered (written after the answer)."""
    deadline = time.monotonic() + 30
    while "GET /openapi.json" not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.05)
    return server.log_text()


def described_server(server: CrmServerProcess) -> str:
    response = httpx.get(f"{server.url}/openapi.json", headers={**FORWARDED, "X-API-Key": server.admin_key or ""},
                         timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["servers"][0]["url"]


def test_a_trusted_proxys_scheme_and_client_are_believed(servers: dict[str, CrmServerProcess]) -> None:
    assert described_server(servers["trusted"]) == "https://crm.example.com"
    assert "203.0.113.7" in access_log(servers["trusted"])


def test_anyone_else_cannot_claim_them(servers: dict[str, CrmServerProcess]) -> None:
    assert described_server(servers["untrusted"]) == "http://crm.example.com"
    assert "203.0.113.7" not in access_log(servers["untrusted"])


def test_a_bad_entry_stops_the_server_naming_it(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "crm_server", "server", "--sandbox", "--port", str(free_port()),
                           "--state-dir", str(tmp_path)], env=crm_env({"CRM_TRUSTED_PROXIES": "proxy.internal"}),
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert "proxy.internal" in done.stdout + done.stderr


@pytest.mark.parametrize("trusted, scheme", [("127.0.0.1", "https"), ("", "http")])
def test_the_functions_host_follows_its_own_setting(trusted: str, scheme: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**hermetic_env(), "SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "unused",
           "SUPABASE_JWT_SECRET": "proxy-test-secret-proxy-test-secret-1234", "FUNCTIONS_TRUSTED_PROXIES": trusted}
    process = subprocess.Popen([sys.executable, "-m", "tgcrm", "functions", "--port", str(port)], env=env,
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/functions/v1/openapi.json"
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(url, headers={**FORWARDED, "Host": "project.example.com"}, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "tgcrm functions did not answer"
                time.sleep(0.1)
        assert response.json()["servers"] == [{"url": f"{scheme}://project.example.com/functions/v1"}]
    finally:
        process.terminate()
        process.wait(30)
