"""Several crm_server instances on one PostgreSQL: what forwarding adds to a send, how long a failover takes, and
the inbound rate and the accounts' spread with 1, 2 and 3 instances (bench/cluster_inbound.py).

Two instances on an embedded PostgreSQL and one sandbox world, one logged-in account. Sends go alternately to the
instance holding the account (direct) and to the other (forwarded: one signed hop more); the figure is the p50 each
way and their difference. Failover: the holder is killed (SIGKILL) and the time until the other instance holds the
account and a send through it succeeds is measured (lease TTL + a claim round + connect), then the killed one is
started again; median of `failovers` runs. Hand-over: the same after a SIGTERM (the lease is released at once).

Run alone: `python -m bench.cluster [--sends 300] [--failovers 3] [--ttl 5] [--inbound-messages 2000]`.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.cluster_inbound import InboundShape
from bench.cluster_inbound import measure as measure_inbound
from bench.common import BenchResult, figure, percentile

if TYPE_CHECKING:
    from tests.crm_server.cluster_process import Cluster
    from tests.crm_server.server_process import CrmServerProcess

PROJECT = "6a2f9c1e-3b7d-4e5a-9c8b-0000000000b1"


@dataclass(frozen=True)
class ClusterConfig:
    sends: int = 300
    failovers: int = 3
    ttl: float = 5.0
    inbound: InboundShape = InboundShape()


SMALLEST = ClusterConfig(sends=20, failovers=1, ttl=3.0,
                         inbound=InboundShape(accounts=3, senders=2, messages=60, runs=1))


def _holder_and_other(cluster: Cluster) -> tuple[CrmServerProcess, CrmServerProcess]:
    instances = cluster.live
    held = [cluster.held(instance) for instance in instances]
    holder = instances[held.index(1)]
    return holder, next(instance for instance in instances if instance is not holder)


def _send_ms(http: httpx.Client, url: str, phone: str, to: str, text: str) -> float:
    started = time.perf_counter()
    response = http.post(f"{url}/telegram/send", json={"project_id": PROJECT, "phone": phone, "to": to,
                                                        "text": text})
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text
    return elapsed


def run(config: ClusterConfig = ClusterConfig(), workdir: Path | None = None) -> BenchResult:
    from supabase_local.database import LocalDatabase
    from tests.crm_server.cluster_process import Cluster, fresh_postgres_database, wait_until  # noqa: F811
    from tests.helpers.net import free_port

    direct: list[float] = []
    forwarded: list[float] = []
    failover: list[float] = []
    handover: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-", dir=workdir) as directory:
        root = Path(directory)
        database = LocalDatabase(root / "db", port=free_port(), durable=False)
        database.start()
        try:
            url = fresh_postgres_database(database.admin_url, "crm_cluster_bench")
            cluster = Cluster(root / "cluster", url, {
                "CRM_LEASE_TTL_SECONDS": str(config.ttl), "CRM_LOG_LEVEL": "warning", "CRM_HISTORY_ON_CONNECT": "0",
                # Pacing is a policy, not a cost: take it out of the measurement.
                "CRM_SEND_RATE_PER_MINUTE": "1000000", "CRM_SEND_BURST": "1000000"})
            try:
                cluster.add()
                cluster.add()
                api = cluster.client()
                phone, user = "+15551230001", "+15551230002"
                api.login(PROJECT, phone)
                api.ok(api.post("/sandbox/users", json={"phone": user, "username": "bench_cluster_user"}))
                wait_until(lambda: sorted(cluster.holdings()) == [0, 1], 30, "the account held")
                holder, other = _holder_and_other(cluster)
                with httpx.Client(headers={"X-API-Key": cluster.admin_key or ""}, timeout=30) as http:
                    for turn in range(10):  # warm both paths (connections, caches)
                        _send_ms(http, holder.url, phone, "@bench_cluster_user", f"warm {turn}")
                        _send_ms(http, other.url, phone, "@bench_cluster_user", f"warm {turn}")
                    for turn in range(config.sends):
                        direct.append(_send_ms(http, holder.url, phone, "@bench_cluster_user", f"d {turn}"))
                        forwarded.append(_send_ms(http, other.url, phone, "@bench_cluster_user", f"f {turn}"))
                    for turn in range(2 * config.failovers):
                        # Alternately a crash (SIGKILL: the lease must expire) and a graceful stop (SIGTERM: released).
                        holder, other = _holder_and_other(cluster)
                        graceful = turn % 2 == 1
                        killed_at = time.monotonic()
                        stopping = threading.Thread(target=holder.stop if graceful else holder.kill)
                        stopping.start()

                        def live_elsewhere() -> bool:
                            try:
                                response = http.post(f"{other.url}/telegram/send", json={
                                    "project_id": PROJECT, "phone": phone, "to": "@bench_cluster_user",
                                    "text": "after the kill"})
                            except httpx.TransportError:
                                return False
                            return response.status_code == 200

                        wait_until(live_elsewhere, config.ttl + 30, "the account live on the survivor")
                        (handover if graceful else failover).append(time.monotonic() - killed_at)
                        stopping.join()
                        holder.start()
                        wait_until(lambda: sorted(cluster.holdings()) == [0, 1], 30, "settled again")
                api.close()
            finally:
                cluster.stop()
            spread = measure_inbound(
                root / "inbound", fresh_postgres_database(database.admin_url, "crm_cluster_bench_inbound"),
                {"CRM_LEASE_TTL_SECONDS": str(config.ttl), "CRM_LOG_LEVEL": "warning", "CRM_HISTORY_ON_CONNECT": "0"},
                config.inbound)
        finally:
            database.stop()

    shape = config.inbound
    result = BenchResult("cluster", config={
        "instances": 2, "sends": config.sends, "failovers": config.failovers, "lease_ttl_s": config.ttl,
        "inbound": {"accounts": shape.accounts, "chats_per_account": shape.senders, "messages": shape.messages,
                    "runs": shape.runs, "instances": list(shape.sizes)}})
    result.add(figure("send p50, to the holding instance", "ms", [percentile(direct, 0.5)]))
    result.add(figure("send p50, forwarded by the other instance", "ms", [percentile(forwarded, 0.5)]))
    result.add(figure("p50 added by forwarding", "ms", [percentile(forwarded, 0.5) - percentile(direct, 0.5)]))
    result.add(figure("failover: SIGKILL → account live elsewhere", "s", failover, at_most=config.ttl + 10))
    result.add(figure("hand-over: SIGTERM → account live elsewhere", "s", handover, at_most=2))
    for size in spread:
        instances = f"{size.instances} instance{'s' if size.instances > 1 else ''}"
        result.add(figure(f"inbound rate, {instances}, {shape.accounts} accounts", "msg/s", size.rates))
        result.add(figure(f"accounts on the busiest instance, {instances}", "accounts", [max(size.holdings)],
                          at_most=math.ceil(shape.accounts / size.instances) + 1))
        result.notes.append(f"{instances}: accounts held per instance {size.holdings}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sends", type=int, default=ClusterConfig.sends)
    parser.add_argument("--failovers", type=int, default=ClusterConfig.failovers)
    parser.add_argument("--ttl", type=float, default=ClusterConfig.ttl)
    parser.add_argument("--inbound-messages", type=int, default=InboundShape.messages)
    parser.add_argument("--inbound-runs", type=int, default=InboundShape.runs)
    args = parser.parse_args()
    inbound = InboundShape(messages=args.inbound_messages, runs=args.inbound_runs)
    result = run(ClusterConfig(sends=args.sends, failovers=args.failovers, ttl=args.ttl, inbound=inbound))
    from bench.common import summary_table

    print(summary_table([result]))
    print(result.json_line())


if __name__ == "__main__":
    main()
