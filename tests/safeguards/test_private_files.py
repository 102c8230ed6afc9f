"""State no other user can read: a fresh `tgcrm server` state folder is 0700 with every file in it 0600, under a
process umask of 0077; and the code that writes keys, passwords, the env file and the stores creates each file
0600 from the start, never chmod-ing it afterwards (between the two, anyone could read it)."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crm_server.server_process import hermetic_env
from tests.helpers.net import free_port


def modes_under(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """The permission bits of `folder` (as ".") and of everything below it, by relative path."""
    found = {".": stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        if not relative.startswith(skip):
            found[relative] = stat.S_IMODE(path.lstat().st_mode)
    return found


def wider_than_private(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """What under `folder` some other user could read or enter: files not 0600, folders not 0700."""
    wide = {}
    for relative, mode in modes_under(folder, skip).items():
        expected = 0o700 if (folder / relative).is_dir() else 0o600
        if mode != expected:
            wide[relative] = oct(mode)
    return wide


def umask_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError(f"no Umask in /proc/{pid}/status")


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`tgcrm server --sandbox` on a state folder it creates itself (its output kept outside that folder)."""
    state = tmp_path / "state"
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tgcrm", "server", "--sandbox", "--port", str(free_port()),
             "--state-dir", str(state)], stdout=output, stderr=subprocess.STDOUT, env=hermetic_env(), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while "READY" not in log.read_text(errors="replace").splitlines():
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "tgcrm server did not print READY within 60 s"
            time.sleep(0.05)
        yield process, state
    finally:
        process.terminate()
        process.wait(30)


def test_a_fresh_crm_server_state_folder_is_private(fresh_server: tuple[subprocess.Popen[bytes], Path]) -> None:
    process, state = fresh_server
    assert umask_of(process.pid) == 0o077
    names = set(modes_under(state))
    assert {"crm.sqlite3", "crm_session.key", "sandbox_world.sqlite3"} <= names, names
    assert wider_than_private(state) == {}


@pytest.fixture
def no_chmod_of_files(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any chmod of a regular file fails the test, under the usual umask 022 (folders may still be changed)."""
    real_chmod, real_fchmod = os.chmod, os.fchmod

    def chmod(path: object, mode: int, *args: object, **kwargs: object) -> None:
        if os.path.isfile(path):  # type: ignore[arg-type]
            raise AssertionError(f"{path} was chmod-ed after it was created")
        real_chmod(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    def fchmod(fd: int, mode: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise AssertionError("a file was fchmod-ed after it was created")
        real_fchmod(fd, mode)

    monkeypatch.setattr(os, "chmod", chmod)
    monkeypatch.setattr(os, "fchmod", fchmod)
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_keys_passwords_and_the_env_file_are_created_private(tmp_path: Path, no_chmod_of_files: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from supabase_local.database import LocalDatabase
    from supabase_local.keys import local_keys
    from tgcrm.local_commands import write_env_file
    from tgcrm.up_command import claim_state_dir, ensure_functions_settings_key

    monkeypatch.delenv("FUNCTIONS_SETTINGS_KEY", raising=False)
    state = tmp_path / "state"
    lock = claim_state_dir(state, fresh=False)
    try:
        local_keys(state)
        LocalDatabase(state, database_url="postgresql://postgres@127.0.0.1:1/postgres").urls()  # its password
        ensure_functions_settings_key(state)
        write_env_file(state, {"SUPABASE_URL": "http://127.0.0.1:54321"})
        write_env_file(state, {"SUPABASE_URL": "http://127.0.0.1:54321"})  # replaced, not reopened
    finally:
        lock.close()
    assert {"up.lock", ".tgcrm-state", "jwt_secret", "authenticator.password", "functions_settings.key",
            "env"} <= set(modes_under(state))
    assert wider_than_private(state) == {}


def test_crm_server_keys_and_stores_are_created_private(tmp_path: Path, no_chmod_of_files: None) -> None:
    from crm_server.sandbox import SandboxWorld
    from crm_server.settings import ServerSettings, load_session_key
    from crm_server.store import Store
    from tgcrm.up_command import _saved_or_new_key

    state = tmp_path / "crm"
    settings = ServerSettings(state_dir=state, sandbox=True)

    async def open_the_store() -> None:
        store = await Store.open(settings.resolved_database_url, load_session_key(settings))
        try:
            await _saved_or_new_key(store, state / "crm_admin_api_key", None)
            assert wider_than_private(state) == {}  # the -wal and -shm files too, while they exist
        finally:
            await store.close()

    asyncio.run(open_the_store())
    SandboxWorld(settings.resolved_sandbox_world).close()
    assert {"crm.sqlite3", "crm_session.key", "crm_admin_api_key", "sandbox_world.sqlite3"} <= set(modes_under(state))
    assert wider_than_private(state) == {}


def test_postgres_files_are_created_private(tmp_path: Path, no_chmod_of_files: None) -> None:
    """Its password, its log and the password file initdb reads; the cluster itself is PostgreSQL's (0700)."""
    from supabase_local.postgres import EmbeddedPostgres, PostgresConfig

    state = tmp_path / "state"
    server = EmbeddedPostgres(PostgresConfig(data_dir=state / "postgres", port=free_port(), durable=False,
                                             state_dir=state))
    server.start()
    try:
        assert {"postgres/postgres.password", "postgres/postgres.log"} <= set(modes_under(state))
        wide = wider_than_private(state, skip=("postgres/pgdata/",))
        if os.geteuid() == 0:
            # PostgreSQL runs as its own user, let through the state folder and its own folder by their group only.
            assert wide == {".": "0o710", "postgres": "0o710"}, wide
        else:
            assert wide == {}, wide
        assert stat.S_IMODE((state / "postgres" / "pgdata").stat().st_mode) == 0o700
    finally:
        server.stop()
