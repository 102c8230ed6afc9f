"""Gateway: a single-row select by primary key through supabase-py and the REST gateway (the API process, as `tgcrm
up` runs it), next to asyncpg's `fetchrow` of the same query, in the same run; and the gateway's CPU per request.

`concurrency` requests are kept in flight on each path; the figures are requests/s, their ratio, and the API
process's CPU time (user + system) per request over the run. Beside it, the same process's CPU per `GET /health`
(httpx, same concurrency): what serving any HTTP request costs there (uvicorn, its request limits, the sockets)
before the gateway does anything, so the gateway's own share is the difference.

Run alone: `python -m bench.gateway [--requests 3000] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchResult, figure

# The query both paths run: PostgREST's `clients?select=id,name,phone&id=eq.<id>`.
COLUMNS = "id, name, phone"
SQL = "SELECT id, name, phone FROM public.clients WHERE id = $1"


@dataclass(frozen=True)
class GatewayConfig:
    requests: int = 3000
    warmup: int = 200
    concurrency: int = 4
    runs: int = 3


SMALLEST = GatewayConfig(requests=50, warmup=10, concurrency=2, runs=1)


async def _in_flight(concurrency: int, requests: int, one: Callable[[], Awaitable[None]]) -> float:
    """Seconds to complete `requests` calls of `one`, `concurrency` at a time."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def _measure(api_url: str, api_pid: int, service_role_key: str, admin_dsn: str,
                   config: GatewayConfig) -> dict[str, float]:
    import asyncpg
    from supabase import acreate_client

    client_id = str(uuid.uuid4())
    organization_id = str(uuid.uuid4())
    pool = await asyncpg.create_pool(admin_dsn, min_size=config.concurrency, max_size=config.concurrency)
    assert pool is not None
    await pool.execute("INSERT INTO public.organizations (id, name) VALUES ($1, 'Bench gateway')", organization_id)
    await pool.execute("INSERT INTO public.clients (id, organization_id, name, phone) VALUES ($1, $2, 'Bench', "
                       "'+15550001111')", client_id, organization_id)
    supabase = await acreate_client(api_url, service_role_key)
    try:
        async def through_gateway() -> None:
            response = await supabase.table("clients").select(COLUMNS).eq("id", client_id).execute()
            assert response.data and response.data[0]["id"] == client_id

        async def through_asyncpg() -> None:
            row = await pool.fetchrow(SQL, uuid.UUID(client_id))
            assert row is not None

        await _in_flight(config.concurrency, config.warmup, through_gateway)
        await _in_flight(config.concurrency, config.warmup, through_asyncpg)
        cpu_before = _cpu_seconds(api_pid)
        gateway_seconds = await _in_flight(config.concurrency, config.requests, through_gateway)
        cpu_per_request = (_cpu_seconds(api_pid) - cpu_before) / config.requests
        asyncpg_seconds = await _in_flight(config.concurrency, config.requests, through_asyncpg)
        health_cpu_per_request = await _health_cpu_per_request(api_url, api_pid, config)
    finally:
        await supabase.postgrest.aclose()
        await pool.close()
    gateway_per_s = config.requests / gateway_seconds
    asyncpg_per_s = config.requests / asyncpg_seconds
    return {"gateway_per_s": gateway_per_s, "asyncpg_per_s": asyncpg_per_s, "ratio": gateway_per_s / asyncpg_per_s,
            "cpu_ms": cpu_per_request * 1000, "health_cpu_ms": health_cpu_per_request * 1000}


async def _health_cpu_per_request(api_url: str, api_pid: int, config: GatewayConfig) -> float:
    """The API process's CPU seconds per `GET /health`, the cheapest request it serves, through httpx as
    supabase-py's requests go."""
    import httpx

    async with httpx.AsyncClient(base_url=api_url) as http:
        async def health() -> None:
            response = await http.get("/health")
            assert response.status_code == 200

        await _in_flight(config.concurrency, config.warmup, health)
        cpu_before = _cpu_seconds(api_pid)
        await _in_flight(config.concurrency, config.requests, health)
        return (_cpu_seconds(api_pid) - cpu_before) / config.requests


def run(config: GatewayConfig = GatewayConfig(), workdir: Path | None = None) -> BenchResult:
    from supabase_local.database import LocalDatabase
    from supabase_local.keys import local_keys
    from tests.helpers.net import free_port
    from tests.reliability.stack import ApiProcess

    measured: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-", dir=workdir) as directory:
        database = LocalDatabase(Path(directory) / "db", port=free_port(), durable=False)
        database.start()
        try:
            asyncio.run(database.prepare(seed=True))
            keys = local_keys(Path(directory) / "db")
            urls = database.urls()
            api = ApiProcess(Path(directory) / "api", {
                "SUPABASE_SERVICE_ROLE_KEY": keys.service_role_key, "SUPABASE_ANON_KEY": keys.anon_key,
                "SUPABASE_JWT_SECRET": keys.jwt_secret, "TGCRM_REST_DATABASE_URL": urls.authenticator,
                "TGCRM_AUTH_DATABASE_URL": urls.auth_admin})
            api.start()
            try:
                assert api.process is not None
                for _ in range(config.runs):
                    values = asyncio.run(_measure(api.url, api.process.pid, keys.service_role_key, urls.admin,
                                                  config))
                    for name, value in values.items():
                        measured.setdefault(name, []).append(value)
            finally:
                api.stop()
        finally:
            database.stop()

    result = BenchResult("gateway", config={"requests": config.requests, "concurrency": config.concurrency,
                                            "runs": config.runs})
    result.add(figure("supabase-py → gateway, select by primary key", "req/s", measured["gateway_per_s"]))
    result.add(figure("asyncpg fetchrow, same query", "req/s", measured["asyncpg_per_s"]))
    result.add(figure("gateway / asyncpg", "ratio", measured["ratio"]))
    result.add(figure("API process CPU per gateway request", "ms", measured["cpu_ms"]))
    result.add(figure("API process CPU per GET /health (serving any request)", "ms", measured["health_cpu_ms"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=GatewayConfig.requests)
    parser.add_argument("--concurrency", type=int, default=GatewayConfig.concurrency)
    parser.add_argument("--runs", type=int, default=GatewayConfig.runs)
    args = parser.parse_args()
    from bench.common import summary_table

    result = run(GatewayConfig(requests=args.requests, concurrency=args.concurrency, runs=args.runs))
    print(summary_table([result]))
    print(result.json_line())


if __name__ == "__main__":
    main()
