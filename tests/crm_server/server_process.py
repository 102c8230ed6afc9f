"""crm_server as a real subprocess on a real socket, the way an operator runs it, plus a small HTTP client for it.

Tests start it with `python -m crm_server server --sandbox`, read its `CRM_URL`/`CRM_API_KEY`/`READY` lines,
and drive it over HTTP; its whole output goes to a log file the tests can inspect.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.net import free_port

LOGIN_CODE = "12345"
_PHONES = itertools.count(int(time.time() * 1000) % 10_000_000)


def new_phone() -> str:
    """A phone no other test in this run uses (the sandbox world is shared by the tests of one server)."""
    return f"+1555{next(_PHONES) % 10_000_000:07d}"


def hermetic_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without crm_server settings, so a developer's shell cannot change the tests."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CRM_", "TGCRM_", "TELEGRAM_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(*args: str, state_dir: Path, env: dict[str, str] | None = None) -> str:
    """`python -m crm_server <args> --state-dir <state_dir>`; returns stdout."""
    result = subprocess.run(
        [sys.executable, "-m", "crm_server", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=hermetic_env(env),
        cwd=state_dir,
        check=True,
    )
    return result.stdout


class CrmServerProcess:
    def __init__(self, state_dir: Path, *, env: dict[str, str] | None = None, name: str = "crm") -> None:
        self.state_dir = state_dir
        self.env = env or {}
        self.port = free_port()
        self.log_path = state_dir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.admin_key: str | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> "CrmServerProcess":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "crm_server", "server", "--sandbox",
                "--port", str(self.port), "--state-dir", str(self.state_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=hermetic_env(self.env),
            cwd=self.state_dir,
        )
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            output = self.log_path.read_bytes()[offset:].decode(errors="replace")
            lines = output.splitlines()
            for line in lines:
                if line.startswith("CRM_URL="):
                    self.url = line.split("=", 1)[1].strip()
                if line.startswith("CRM_API_KEY="):
                    self.admin_key = line.split("=", 1)[1].strip()
            if "READY" in lines:
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"crm_server exited with {self.process.returncode}:\n{output}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"crm_server did not print READY within {timeout}s")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait: the server disconnects its clients, flushes sessions and releases leases."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Where it hangs goes to its log (safeguards/task_dump.py), which the failure then shows.
            process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            process.kill()
            process.wait()
            tail = self.log_path.read_text(errors="replace")[-20000:] if self.log_path.exists() else ""
            raise AssertionError(f"crm_server did not stop within {timeout:.0f} s of SIGTERM; its tasks:\n{tail}") from None

    def kill(self) -> None:
        """SIGKILL: a crash. Nothing is flushed and no lease is released; leases must expire on their own."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, key: str | None) -> "CrmClient":
        return CrmClient(self.url, key)


class CrmClient:
    """httpx against one server with one API key, plus the multi-step flows tests repeat (sandbox login)."""

    def __init__(self, url: str, key: str | None) -> None:
        headers = {"X-API-Key": key} if key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30.0)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.delete(path, **kwargs)

    def ok(self, response: httpx.Response) -> Any:
        assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
        return response.json()

    def login(self, project_id: str, phone: str, password: str | None = None) -> None:
        """Log a sandbox account in through the HTTP login routes (code, then 2FA password if it has one)."""
        if password is not None:
            self.ok(self.post("/sandbox/accounts", json={"phone": phone, "password": password}))
        self.ok(self.post("/telegram/auth/send-code", json={"project_id": project_id, "phone": phone}))
        signed = self.ok(
            self.post("/telegram/auth/sign-in", json={"project_id": project_id, "phone": phone, "code": LOGIN_CODE})
        )
        if password is not None:
            assert signed == {"status": "password_required"}
            self.ok(
                self.post(
                    "/telegram/auth/password",
                    json={"project_id": project_id, "phone": phone, "password": password},
                )
            )
        else:
            assert signed == {"status": "authorized"}

    def user(self, phone: str, username: str | None = None, **fields: Any) -> int:
        body = {"phone": phone, **fields}
        if username is not None:
            body["username"] = username
        return int(self.ok(self.post("/sandbox/users", json=body))["user_id"])

    def send(self, project_id: str, phone: str, to: str | int, text: str, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", None)
        body = {"project_id": project_id, "phone": phone, "to": to, "text": text, **kwargs}
        return self.post("/telegram/send", json=body, headers=headers)

    def sent(self, account_phone: str) -> list[dict[str, Any]]:
        return self.ok(self.get("/sandbox/sent", params={"account_phone": account_phone}))  # type: ignore[no-any-return]

    def account(self, project_id: str, phone: str) -> dict[str, Any]:
        accounts = self.ok(self.get("/telegram/status", params={"project_id": project_id, "phone": phone}))["accounts"]
        assert len(accounts) == 1, accounts
        return accounts[0]  # type: ignore[no-any-return]

    def wait_account(self, project_id: str, phone: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            account = self.account(project_id, phone)
            if account["state"] == state or time.monotonic() > deadline:
                return account
            time.sleep(0.1)


@contextlib.contextmanager
def running_server(name: str, env: Mapping[str, str]) -> Iterator[CrmServerProcess]:
    """crm_server on the sandbox in a temporary state folder of its own, stopped on exit (a test module's server)."""
    with tempfile.TemporaryDirectory(prefix=f"crm-{name}-") as directory:
        process = CrmServerProcess(Path(directory), env=dict(env), name=name).start()
        try:
            yield process
        finally:
            process.stop()


@contextlib.contextmanager
def admin_client(server: CrmServerProcess) -> Iterator[CrmClient]:
    """A client of `server` with its admin key."""
    client = server.client(server.admin_key)
    try:
        yield client
    finally:
        client.close()
