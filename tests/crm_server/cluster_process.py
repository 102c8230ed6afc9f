"""Several crm_server processes on one PostgreSQL store and one sandbox world: a cluster on real sockets.

Each instance is a `CrmServerProcess` with a state folder of its own (its media files), sharing the store
(`CRM_DATABASE_URL`), the key sessions are sealed with (`CRM_SESSION_KEY`), the cluster secret and the simulated
Telegram (`CRM_SANDBOX_WORLD`). `ClusterClient` spreads requests over the live instances as a load balancer would.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cryptography.fernet import Fernet

from tests.crm_server.server_process import LOGIN_CODE, CrmServerProcess


def fresh_postgres_database(admin_url: str, name: str) -> str:
    """An empty database `name` on the session's PostgreSQL; its SQLAlchemy (asyncpg) URL."""

    async def create() -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            # Connections a previous run's killed instances left behind would block the DROP.
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    base, _ = admin_url.rsplit("/", 1)
    return base.replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"


class Cluster:
    def __init__(self, root: Path, database_url: str, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = {
            "CRM_DATABASE_URL": database_url,
            "CRM_SESSION_KEY": Fernet.generate_key().decode(),
            "CRM_CLUSTER_SECRET": "cluster-secret-for-tests-0123456789",
            "CRM_SANDBOX_WORLD": str(root / "sandbox_world.sqlite3"),
            **(env or {}),
        }
        self.instances: list[CrmServerProcess] = []
        self.admin_key: str | None = None

    def add(self) -> CrmServerProcess:
        """Start one more instance (the first one makes the admin key and prints it)."""
        name = f"i{len(self.instances)}"
        instance = CrmServerProcess(self.root / name, env=self.env, name=name).start()
        if self.admin_key is None:
            self.admin_key = instance.admin_key
        self.instances.append(instance)
        return instance

    @property
    def live(self) -> list[CrmServerProcess]:
        return [instance for instance in self.instances if instance.process is not None]

    def stop(self) -> None:
        for instance in self.instances:
            instance.stop()

    def held(self, instance: CrmServerProcess) -> int:
        response = httpx.get(f"{instance.url}/health", headers={"X-API-Key": self.admin_key or ""}, timeout=10)
        return int(response.json()["accounts_held"])

    def holdings(self) -> list[int]:
        return [self.held(instance) for instance in self.live]

    def holders(self, project_id: str) -> dict[str, CrmServerProcess]:
        """phone → the live instance holding its lease now (from the store, as the instances themselves decide)."""
        ids = {}
        for instance in self.live:
            answer = httpx.get(f"{instance.url}/health", headers={"X-API-Key": self.admin_key or ""}, timeout=10)
            ids[answer.json()["instance_id"]] = instance

        async def leases() -> list[asyncpg.Record]:
            dsn = self.env["CRM_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)
            connection = await asyncpg.connect(dsn)
            try:
                return await connection.fetch(
                    "SELECT phone, lease_owner FROM accounts WHERE project_id = $1 AND lease_expires_at > $2",
                    project_id, time.time())
            finally:
                await connection.close()

        return {row["phone"]: ids[row["lease_owner"]] for row in asyncio.run(leases()) if row["lease_owner"] in ids}

    def client(self) -> "ClusterClient":
        assert self.admin_key is not None
        return ClusterClient(self, self.admin_key)


class ClusterClient:
    """Requests spread round-robin over the live instances; an instance that refuses connections is skipped (a load
    balancer's health check would have taken it out)."""

    def __init__(self, cluster: Cluster, key: str) -> None:
        self._cluster = cluster
        self._http = httpx.Client(headers={"X-API-Key": key}, timeout=30.0)
        self._turn = itertools.count()
        self.cut_off = 0  # requests an instance's death cut off mid-flight

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, on: CrmServerProcess | None = None, **kwargs: Any) -> httpx.Response:
        if on is not None:
            return self._http.request(method, on.url + path, **kwargs)
        last_error: Exception | None = None
        for _ in range(len(self._cluster.instances) + 1):
            live = self._cluster.live
            instance = live[next(self._turn) % len(live)]
            try:
                return self._http.request(method, instance.url + path, **kwargs)
            except httpx.ConnectError as exc:
                last_error = exc
            except httpx.TransportError:
                # The instance died with the request in flight: it may or may not have acted on it.
                self.cut_off += 1
                raise
        raise AssertionError(f"no instance answered {method} {path}: {last_error}")

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    @staticmethod
    def ok(response: httpx.Response) -> Any:
        assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
        return response.json()

    def login(self, project_id: str, phone: str, *, code_on: CrmServerProcess | None = None,
              sign_in_on: CrmServerProcess | None = None) -> None:
        """Code requested on one instance, signed in on (by default) whichever comes next."""
        self.ok(self.post("/telegram/auth/send-code", json={"project_id": project_id, "phone": phone}, on=code_on))
        signed = self.ok(self.post("/telegram/auth/sign-in", on=sign_in_on,
                                   json={"project_id": project_id, "phone": phone, "code": LOGIN_CODE}))
        assert signed == {"status": "authorized"}, signed

    def status(self, project_id: str, on: CrmServerProcess) -> list[dict[str, Any]]:
        answer = self.ok(self.get("/telegram/status", params={"project_id": project_id}, on=on))
        return answer["accounts"]  # type: ignore[no-any-return]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took for `predicate` to hold; AssertionError naming `what` after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


def phones(count: int, start: Iterator[int]) -> list[str]:
    return [f"+1556{next(start) % 10_000_000:07d}" for _ in range(count)]
