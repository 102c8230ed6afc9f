"""Inbound end to end through a cluster of 1, 2 and 3 crm_server instances: how the accounts spread, and the rate.

One cluster on its own database of the bench's PostgreSQL and one sandbox world: `accounts` accounts logged in
(each webhook pointing at a receiver in its own process that answers 200 at once, bench/receiver.py), then grown
an instance at a time. At each size, once the accounts have settled (each instance at most its fair share ⌈n/k⌉),
a burst of `messages` across the accounts and `senders` chats each is injected with bulk `POST /sandbox/incoming`
calls (spread over the instances, as a load balancer would; every holder's watcher picks its accounts' messages
out of the shared world), and the rate is counted from the first injection to the last distinct event at the
receiver; `runs` bursts per size. On a 2-core machine more instances bring no cores: the figure shows what the
cluster costs (lease rounds, a world watcher and an outbox drainer per instance), not a gain.
"""

from __future__ import annotations

import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.receiver import FastReceiver

if TYPE_CHECKING:
    from tests.crm_server.cluster_process import Cluster, ClusterClient

PROJECT = "6a2f9c1e-3b7d-4e5a-9c8b-0000000000b2"
BULK = 500  # messages per POST /sandbox/incoming (at most 1,000)


@dataclass(frozen=True)
class InboundShape:
    accounts: int = 10
    senders: int = 5  # chats per account
    messages: int = 2000  # per burst
    runs: int = 3  # bursts per cluster size
    sizes: tuple[int, ...] = (1, 2, 3)


@dataclass
class SizeResult:
    instances: int
    holdings: list[int]
    rates: list[float] = field(default_factory=list)


def _settled(cluster: Cluster, total: int) -> bool:
    holdings = cluster.holdings()
    return sum(holdings) == total and max(holdings) <= math.ceil(total / len(holdings))


def _connected(api: ClusterClient, total: int) -> bool:
    entries = api.ok(api.get("/telegram/status", params={"project_id": PROJECT}))["accounts"]
    return len(entries) == total and all(entry["connected"] for entry in entries)


def _burst(api: ClusterClient, accounts: list[str], senders: list[str], count: int, tag: str) -> None:
    messages = [{"account_phone": accounts[index % len(accounts)],
                 "from": senders[(index // len(accounts)) % len(senders)], "text": f"{tag} {index}"}
                for index in range(count)]
    for start in range(0, count, BULK):
        api.ok(api.post("/sandbox/incoming", json={"messages": messages[start:start + BULK]}, timeout=120))


def measure(root: Path, database_url: str, env: dict[str, str], shape: InboundShape) -> list[SizeResult]:
    from tests.crm_server.cluster_process import Cluster, wait_until

    results: list[SizeResult] = []
    with FastReceiver() as receiver:
        cluster = Cluster(root, database_url, {**env, "CRM_ALLOW_PRIVATE_WEBHOOKS": "1"})
        try:
            cluster.add()
            api = cluster.client()
            try:
                stamp = uuid.uuid4().int
                accounts = [f"+1557{(stamp + index) % 10_000_000:07d}" for index in range(shape.accounts)]
                senders = [f"+1558{(stamp + index) % 10_000_000:07d}" for index in range(shape.senders)]
                for phone in senders:
                    api.ok(api.post("/sandbox/users", json={"phone": phone}))

                def log_in(phone: str) -> None:
                    api.login(PROJECT, phone)
                    api.ok(api.post("/integration/lovable/connect", json={
                        "project_id": PROJECT, "phone": phone, "webhook_url": receiver.url,
                        "secret": "bench-cluster-inbound-secret"}))

                with ThreadPoolExecutor(max_workers=10) as pool:
                    list(pool.map(log_in, accounts))
                for size in shape.sizes:
                    while len(cluster.instances) < size:
                        cluster.add()
                    wait_until(lambda: _settled(cluster, shape.accounts), 60, f"accounts spread over {size}")
                    wait_until(lambda: _connected(api, shape.accounts), 60, "every account connected")
                    result = SizeResult(size, cluster.holdings())
                    # One small burst first: every chat's lane and every connection is warm in the measured ones.
                    expected = receiver.accepted + shape.accounts * shape.senders
                    _burst(api, accounts, senders, shape.accounts * shape.senders, f"warm {size}")
                    receiver.wait_for(expected, timeout=120)
                    for run in range(shape.runs):
                        expected = receiver.accepted + shape.messages
                        started = time.monotonic()
                        _burst(api, accounts, senders, shape.messages, f"burst {size}/{run}")
                        receiver.wait_for(expected, timeout=300 + shape.messages / 10)
                        result.rates.append(shape.messages / (time.monotonic() - started))
                    results.append(result)
            finally:
                api.close()
        finally:
            cluster.stop()
    return results
