"""Fixtures for crm_server: one server subprocess (sandbox mode) shared by the tests, keys for two projects, a fresh
SQLite store per test and a webhook receiver per module.

Tests that need their own server (restart, second server on one store) start one from `CrmServerProcess`.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from crm_server.sandbox import SandboxWorld, install, uninstall
from crm_server.store import Store
from tests.crm_server.server_process import CrmClient, CrmServerProcess, run_cli
from tests.helpers.receiver import Receiver, running_receiver

# Organization ids, as the CRM has them (`keys create --project` takes only a UUID).
PROJECT_A = "5f0c2a6e-1d4b-4e8a-9c3f-00000000000a"
PROJECT_B = "5f0c2a6e-1d4b-4e8a-9c3f-00000000000b"
# Small burst so the rate-limit test needs few sends; every other test uses its own account.
SHARED_SERVER_ENV = {"CRM_SEND_BURST": "5", "CRM_SEND_RATE_PER_MINUTE": "30"}


@pytest.fixture(scope="session")
def crm_server() -> Iterator[CrmServerProcess]:
    with tempfile.TemporaryDirectory(prefix="crm-server-") as directory:
        server = CrmServerProcess(Path(directory), env=SHARED_SERVER_ENV, name="shared").start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def admin(crm_server: CrmServerProcess) -> Iterator[CrmClient]:
    assert crm_server.admin_key is not None
    client = crm_server.client(crm_server.admin_key)
    yield client
    client.close()


@pytest.fixture(scope="session")
def project_keys(crm_server: CrmServerProcess) -> dict[str, str]:
    """Keys made with the CLI (`keys create --project`) against the running server's store."""
    return {
        project: run_cli("keys", "create", "--project", project, state_dir=crm_server.state_dir).strip()
        for project in (PROJECT_A, PROJECT_B)
    }


@pytest.fixture(scope="session")
def client_a(crm_server: CrmServerProcess, project_keys: dict[str, str]) -> Iterator[CrmClient]:
    client = crm_server.client(project_keys[PROJECT_A])
    yield client
    client.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh SQLite store of crm_server's own (test_store.py has its own, on both dialects)."""
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}", Fernet.generate_key())
    yield opened
    await opened.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a real socket, one per test module."""
    with running_receiver() as running:
        yield running


@pytest.fixture
def fresh_receiver(receiver: Receiver) -> Receiver:
    """The module's receiver, with nothing received yet."""
    receiver.reset()
    return receiver


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    """An in-memory sandbox world, installed for the Telethon clients created during the test."""
    sandbox = SandboxWorld()
    install(sandbox)
    yield sandbox
    uninstall()
    sandbox.close()
