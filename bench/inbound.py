"""Inbound end to end: sandbox users write → crm_server (Telethon update → outbox → signed webhook) → the
telegram-crm-webhook function (API process) → PostgreSQL; beside it, in the same run and on the same stack:

- the bare asyncpg INSERT rate into chat_messages (the store's own limit);
- the same burst with crm_server's webhook delivery batched (`{batch_id, events}` posts) and one event per POST,
  on the same account and chats (bench/delivery_mode.py re-registers the account between them);
- the naive peer of the seed plan (bench/naive_listener.py): a Telethon handler awaiting one post per message;
- the load generator's share of the run's CPU (bench/cpu.py): it injects with bulk `POST /sandbox/incoming` calls.

Both the batched burst and the paced run report where the CPU went per message: crm_server (the sandbox and
Telethon in it), the API process (functions and REST gateway) and PostgreSQL, and how many cores each kept busy.

Throughput is a burst of `messages` across `chats` chats, counted from the first injection to the last stored row;
latency is measured per message (injection → its notification row, written right after the message) in a second
run, batched, paced at half the rate the batched burst reached, so it shows the pipeline's own delay rather than
the burst's queue; its first second (every chat's lane starting) is its own figure, the rest the steady state.

Run alone: `python -m bench.inbound [--messages 5000] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import BenchResult, figure, percentile, runs_on_one_stack
from bench.cpu import CpuWindow, postmaster_pid
from bench.delivery_mode import BENCH_BATCH, IGNORED_NOTE, register_delivery

TARGET_RATE = 500.0  # msg/s, batched (goal 1,000)
TARGET_P99_MS = 50.0
TARGET_SHARE_OF_INSERT = 0.10  # goal 0.25
TARGET_BATCHED_OVER_PER_EVENT = 5.0
TARGET_OURS_OVER_NAIVE = 3.0
TARGET_GENERATOR_SHARE_PERCENT = 10.0
MODES: dict[str, dict[str, int] | None] = {"batched": BENCH_BATCH, "per_event": None}


@dataclass(frozen=True)
class InboundConfig:
    messages: int = 5000
    chats: int = 50
    bulk_size: int = 500  # messages per POST /sandbox/incoming (at most 1,000)
    paced_messages: int = 1000  # at most; the paced run lasts about `paced_seconds`
    paced_share: float = 0.5  # of the batched burst's rate
    paced_seconds: float = 10.0
    paced_tick_seconds: float = 0.02  # the paced run injects what is due every tick, in one bulk
    paced_rate: float | None = None  # msg/s of the paced run; None: `paced_share` of the batched burst's rate
    # The paced run's first second, at the same rate, is not counted: re-registering closed every chat's lane, and
    # the first message of each of the 50 chats started its lane at once (lease, registration read, a cold Telethon
    # path): that ramp held the tail (p99 200-400 ms in the first 10-20 % of the run, 20-60 ms after). It is
    # reported apart, as the cold start's p99.
    paced_warmup_seconds: float = 1.0
    insert_rows: int = 5000
    insert_connections: int = 8
    runs: int = 3
    naive: bool = True


SMALLEST = InboundConfig(messages=50, chats=5, bulk_size=20, paced_messages=20, paced_seconds=2.0, insert_rows=200,
                         runs=1)


async def bare_insert_rate(admin_dsn: str, organization_id: str, rows: int, connections: int) -> float:
    """Rows/s of single-row INSERTs (one transaction each, as the pipeline commits) from a pool of connections."""
    pool = await asyncpg.create_pool(admin_dsn, min_size=connections, max_size=connections)
    try:
        client_id = await pool.fetchval(
            "INSERT INTO clients (organization_id, name, telegram_user_id) VALUES ($1, 'bare insert', $2) "
            "RETURNING id", organization_id, str(uuid.uuid4().int % 10**12))
        statement = ("INSERT INTO chat_messages (organization_id, client_id, message_text, message_type, is_outgoing, "
                     "external_message_id, metadata) VALUES ($1, $2, $3, 'client', false, $4, '{}'::jsonb)")
        counter = iter(range(rows))

        async def writer() -> None:
            async with pool.acquire() as connection:
                for index in counter:
                    await connection.execute(statement, organization_id, client_id, f"bare {index}",
                                             f"bare-{uuid.uuid4().hex}")

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(connections)))
        return rows / (time.perf_counter() - started)
    finally:
        await pool.close()


async def inject(stack: Any, phone: str, messages: list[tuple[str, str]], bulk_size: int) -> dict[str, float]:
    """(sender, text) pairs written to the account through bulk `POST /sandbox/incoming` calls, one after another
    (each is one transaction in the world; Telethon gets one update per message); returns text → when its bulk
    was sent."""
    injected: dict[str, float] = {}
    for start in range(0, len(messages), bulk_size):
        bulk = messages[start:start + bulk_size]
        now = time.time()
        await stack.crm_ok("POST", "/sandbox/incoming", json={"messages": [
            {"account_phone": phone, "from": sender, "text": text} for sender, text in bulk]}, timeout=120.0)
        injected.update((text, now) for _, text in bulk)
    return injected


async def inject_paced(stack: Any, phone: str, messages: list[tuple[str, str]], rate: float,
                       tick: float) -> dict[str, float]:
    """`rate` messages/s: every `tick`, what is due in one bulk call; returns text → when it was injected."""
    injected: dict[str, float] = {}
    started = time.perf_counter()
    sent = 0
    while sent < len(messages):
        due = min(len(messages), int((time.perf_counter() - started) * rate) + 1)
        if due > sent:
            injected.update(await inject(stack, phone, messages[sent:due], bulk_size=1000))
            sent = due
        await asyncio.sleep(max(tick, started + sent / rate - time.perf_counter()))
    return injected


async def notification_count(stack: Any, organization_id: str) -> int:
    pool = await stack.db()
    return int(await pool.fetchval("SELECT count(*) FROM notifications WHERE organization_id = $1", organization_id))


async def stored_times(stack: Any, organization_id: str, texts: list[str], *, before: int, timeout: float
                       ) -> dict[str, float]:
    """text → when its notification row was written (right after the message row, in the same request), once
    every text of `texts` has one; `before`: the organization's notification count before they were injected.
    Polls a count (cheap: the bench's CPU is the load generator's), then reads the rows once."""
    pool = await stack.db()
    wanted = set(texts)
    deadline = time.monotonic() + timeout
    while True:
        if await notification_count(stack, organization_id) >= before + len(wanted):
            rows = await pool.fetch("SELECT body, extract(epoch FROM created_at) AS at FROM notifications "
                                    "WHERE organization_id = $1", organization_id)
            stored = {row["body"]: float(row["at"]) for row in rows}
            if wanted <= stored.keys():
                return stored
        if time.monotonic() > deadline:
            rows = await pool.fetch("SELECT body FROM notifications WHERE organization_id = $1", organization_id)
            missing = sorted(wanted - {row["body"] for row in rows})
            raise RuntimeError(f"{len(missing)} of {len(texts)} messages never arrived (e.g. {missing[0]!r})")
        await asyncio.sleep(0.05)


def _plan(senders: list[str], tag: str, count: int) -> list[tuple[str, str]]:
    """`count` messages round robin across the chats, each text unique (the notification rows are keyed by it)."""
    return [(senders[index % len(senders)], f"{tag}/{index} {uuid.uuid4().hex[:8]}") for index in range(count)]


# The processes whose CPU per message the paced run reports: crm_server (with the sandbox and Telethon in it), the
# API process (the functions and the REST gateway) and PostgreSQL (the postmaster and its backends).
PROCESSES = ("crm_server", "api", "postgres")


def _cpu_window(stack: Any) -> CpuWindow:
    roots = [os.getpid()]  # the bench: crm_server and the API process are its children
    named = {}
    postmaster = postmaster_pid(stack.database.state_dir / "postgres")
    if postmaster is not None:
        roots.append(postmaster)  # PostgreSQL: pg_ctl detached it, its backends are its children
    server = getattr(stack.database, "server", None)
    if server is not None and server.process is not None:
        postmaster = server.process.pid  # the embedded cluster is our child (its pid file is in pgdata/)
    if postmaster is not None:
        named["postgres"] = postmaster
    if stack.crm.process is not None:
        named["crm_server"] = stack.crm.process.pid
    if stack.api.process is not None:
        named["api"] = stack.api.process.pid
    return CpuWindow(roots, generator=os.getpid(), named=named)


def _cpu_figures(window: CpuWindow, messages: int, prefix: str) -> dict[str, float]:
    """Per process: CPU ms per message and its share of a core over the window; and the whole run's cores busy."""
    measured = {}
    for name in PROCESSES:
        measured[f"{prefix}_{name}_cpu_ms_per_msg"] = window.named_seconds.get(name, 0.0) * 1000 / messages
        measured[f"{prefix}_{name}_cores"] = window.utilisation(name)
    measured[f"{prefix}_cores"] = window.total_seconds / window.wall_seconds if window.wall_seconds else 0.0
    return measured


async def _burst(stack: Any, account: Any, senders: list[str], config: InboundConfig, tag: str
                 ) -> dict[str, float]:
    messages = _plan(senders, tag, config.messages)
    texts = [text for _, text in messages]
    before = await notification_count(stack, account.tenant.organization_id)
    window = _cpu_window(stack).start()
    started = time.time()
    injected = await inject(stack, account.phone, messages, config.bulk_size)
    stored = await stored_times(stack, account.tenant.organization_id, texts, before=before, timeout=600)
    window.stop()
    latencies = [(stored[text] - injected[text]) * 1000 for text in texts]
    return {"msg_per_s": len(texts) / (max(stored[text] for text in texts) - started),
            "burst_p50_ms": percentile(latencies, 0.50), "generator_share": window.generator_share * 100,
            **_cpu_figures(window, len(texts), "burst")}


async def _naive_burst(stack: Any, config: InboundConfig, senders: list[str], run: int) -> float:
    """The same burst through the naive listener, on an account of its own (connected by telegram-crm-connect, so
    the webhook knows it, but logged in only by the naive client)."""
    from bench.naive_listener import NaiveListener
    from tests.crm_server.server_process import new_phone

    tenant = await stack.tenant(f"Bench naive {run}")
    phone = new_phone()
    response = await stack.http.post(f"{stack.functions_url}/telegram-crm-connect", headers=tenant.auth, json={
        "crmApiUrl": stack.crm.url, "crmApiKey": stack.crm.admin_key, "crmPhoneNumber": phone})
    assert response.status_code == 200, response.text
    connected = response.json()
    _, secret = await stack.integration_secret(connected["integrationId"])
    listener = await NaiveListener(stack.crm.state_dir / "sandbox_world.sqlite3", phone=phone,
                                   project_id=tenant.organization_id, webhook_url=connected["webhookUrl"],
                                   secret=secret).start()
    try:
        warmup = _plan(senders, f"naive warm-up {run}", len(senders))
        listener.inject(warmup)
        await stored_times(stack, tenant.organization_id, [text for _, text in warmup], before=0, timeout=120)
        messages = _plan(senders, f"naive {run}", config.messages)
        before = await notification_count(stack, tenant.organization_id)
        started = time.time()
        for start in range(0, len(messages), config.bulk_size):
            listener.inject(messages[start:start + config.bulk_size])
            await asyncio.sleep(0)  # as the HTTP injection lets the loop run between bulks
        stored = await stored_times(stack, tenant.organization_id, [text for _, text in messages], before=before,
                                    timeout=900)
        return len(messages) / (max(stored[text] for _, text in messages) - started)
    finally:
        await listener.close()


async def _one_run(stack: Any, config: InboundConfig, run: int) -> dict[str, float]:
    measured: dict[str, float] = {}

    # The store's limit, measured first on the same database.
    tenant = await stack.tenant(f"Bench insert {run}")
    measured["bare_insert_per_s"] = await bare_insert_rate(stack.admin_dsn, tenant.organization_id,
                                                           config.insert_rows, config.insert_connections)

    tenant = await stack.tenant(f"Bench inbound {run}")
    account = await stack.connect_account(tenant)
    senders = [phone for _, phone in await asyncio.gather(
        *(stack.sandbox_user(first_name=f"Sender{index}") for index in range(config.chats)))]
    # One message per chat first: clients exist and senders are known, as in a running CRM.
    warmup = _plan(senders, f"warm-up {run}", config.chats)
    await inject(stack, account.phone, warmup, config.bulk_size)
    await stored_times(stack, tenant.organization_id, [text for _, text in warmup], before=0, timeout=120)

    # Both paths on the same account and chats; which goes first alternates between runs.
    order = list(MODES) if run % 2 == 0 else list(reversed(MODES))
    for mode in order:
        if not await register_delivery(stack, account, MODES[mode]):
            measured["batching_ignored"] = 1.0
        for name, value in (await _burst(stack, account, senders, config, f"{mode} {run}")).items():
            measured[f"{mode}_{name}"] = value

    # Latency below capacity, batched: half the rate the batched burst reached, for about `paced_seconds`.
    await register_delivery(stack, account, MODES["batched"])
    rate = config.paced_rate or max(5.0, round(measured["batched_msg_per_s"] * config.paced_share, 1))
    count = max(20, min(config.paced_messages, int(rate * config.paced_seconds)))
    warm = int(rate * config.paced_warmup_seconds)
    measured["paced_rate"] = rate
    paced = _plan(senders, f"paced {run}", warm + count)
    before = await notification_count(stack, tenant.organization_id)
    window = _cpu_window(stack).start()
    injected = await inject_paced(stack, account.phone, paced, rate, config.paced_tick_seconds)
    stored = await stored_times(stack, tenant.organization_id, [text for _, text in paced], before=before,
                                timeout=300)
    measured.update(_cpu_figures(window.stop(), warm + count, "paced"))
    latencies = [(stored[text] - injected[text]) * 1000 for _, text in paced]
    measured["p50_ms"] = percentile(latencies[warm:], 0.50)
    measured["p99_ms"] = percentile(latencies[warm:], 0.99)
    if warm:
        measured["cold_p99_ms"] = percentile(latencies[:warm], 0.99)

    if config.naive:
        measured["naive_msg_per_s"] = await _naive_burst(stack, config, senders, run)
        measured["ours_over_naive"] = measured["batched_msg_per_s"] / measured["naive_msg_per_s"]
    measured["batched_over_per_event"] = measured["batched_msg_per_s"] / measured["per_event_msg_per_s"]
    measured["share_of_insert"] = measured["batched_msg_per_s"] / measured["bare_insert_per_s"]
    return measured


def run(config: InboundConfig = InboundConfig(), workdir: Path | None = None) -> BenchResult:
    runs = runs_on_one_stack("bench-inbound-", workdir, config.runs,
                             lambda stack, index: _one_run(stack, config, index))

    result = BenchResult("inbound", config={"messages": config.messages, "chats": config.chats,
                                            "bulk_size": config.bulk_size, "batch": BENCH_BATCH,
                                            "paced_share_of_burst_rate": config.paced_share, "runs": config.runs})
    burst = f"({config.messages} burst, {config.chats} chats)"
    result.add(figure(f"end-to-end msg/s, batched {burst}", "msg/s", runs["batched_msg_per_s"],
                      at_least=TARGET_RATE))
    result.add(figure(f"end-to-end msg/s, one event per POST {burst}", "msg/s", runs["per_event_msg_per_s"]))
    result.add(figure("batched / one event per POST", "ratio", runs["batched_over_per_event"],
                      at_least=TARGET_BATCHED_OVER_PER_EVENT))
    if config.naive:
        result.add(figure(f"naive listener msg/s (one post per message) {burst}", "msg/s", runs["naive_msg_per_s"]))
        result.add(figure("ours (batched) / naive listener", "ratio", runs["ours_over_naive"],
                          at_least=TARGET_OURS_OVER_NAIVE))
    result.add(figure("latency p50 (batched, paced at half its rate)", "ms", runs["p50_ms"]))
    result.add(figure("latency p99 (batched, paced at half its rate)", "ms", runs["p99_ms"], at_most=TARGET_P99_MS))
    result.add(figure("paced rate", "msg/s", runs["paced_rate"]))
    if "cold_p99_ms" in runs:
        result.add(figure("latency p99 of the paced run's first second (every lane starting)", "ms",
                          runs["cold_p99_ms"]))
    result.add(figure("latency p50 inside the batched burst", "ms", runs["batched_burst_p50_ms"]))
    result.add(figure("load generator's share of CPU, batched burst", "%", runs["batched_generator_share"],
                      at_most=TARGET_GENERATOR_SHARE_PERCENT))
    result.add(figure("load generator's share of CPU, per-event burst", "%", runs["per_event_generator_share"]))
    result.add(figure("bare asyncpg INSERT rows/s", "rows/s", runs["bare_insert_per_s"]))
    result.add(figure("end-to-end (batched) / bare INSERT", "ratio", runs["share_of_insert"],
                      at_least=TARGET_SHARE_OF_INSERT))
    for name in PROCESSES:
        result.add(figure(f"CPU per message, paced: {name}", "ms", runs[f"paced_{name}_cpu_ms_per_msg"]))
        result.add(figure(f"cores busy, paced: {name}", "cores", runs[f"paced_{name}_cores"]))
        result.add(figure(f"CPU per message, batched burst: {name}", "ms",
                          runs[f"batched_burst_{name}_cpu_ms_per_msg"]))
    result.add(figure("cores busy, paced: every process", "cores", runs["paced_cores"]))
    result.add(figure("cores busy, batched burst: every process", "cores", runs["batched_burst_cores"]))
    if runs.get("batching_ignored"):
        result.notes.append(IGNORED_NOTE)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=InboundConfig.messages)
    parser.add_argument("--chats", type=int, default=InboundConfig.chats)
    parser.add_argument("--runs", type=int, default=InboundConfig.runs)
    parser.add_argument("--no-naive", action="store_true", help="skip the naive listener")
    parser.add_argument("--paced-rate", type=float, default=None,
                        help="msg/s of the paced run (default: half the batched burst's rate)")
    args = parser.parse_args()
    from bench.common import summary_table

    result = run(InboundConfig(messages=args.messages, chats=args.chats, runs=args.runs, naive=not args.no_naive,
                               paced_rate=args.paced_rate))
    print(summary_table([result]))
    print(result.json_line())


if __name__ == "__main__":
    main()
