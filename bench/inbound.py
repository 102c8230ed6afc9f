"""Inbound end to end: a sandbox user writes → crm_server (Telethon update → outbox → signed webhook) → the
telegram-crm-webhook function (API process) → PostgreSQL; beside it, the bare asyncpg INSERT rate into
chat_messages on the same database in the same run (the store's own limit).

Throughput is a burst of `messages` across `chats` chats, counted from the first post to the last stored row;
latency is measured per message (post → its notification row, written right after the message) in a second run
paced at half the rate the burst reached, so it shows the pipeline's own delay rather than the burst's queue.

Run alone: `python -m bench.inbound [--messages 2000] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.common import BenchResult, figure, percentile, runs_on_one_stack

TARGET_RATE = 1000.0  # msg/s
TARGET_P99_MS = 50.0
TARGET_SHARE_OF_INSERT = 0.25


@dataclass(frozen=True)
class InboundConfig:
    messages: int = 2000
    chats: int = 50
    paced_messages: int = 500  # at most; the paced run lasts about `paced_seconds`
    paced_share: float = 0.5  # of the burst's rate
    paced_seconds: float = 10.0
    insert_rows: int = 5000
    insert_connections: int = 8
    runs: int = 3
    concurrency: int = 16


SMALLEST = InboundConfig(messages=50, chats=5, paced_messages=20, paced_seconds=2.0, insert_rows=200, runs=1)


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


async def _post_all(stack: object, account: object, senders: list[str], texts: list[str], *,
                    rate: float | None, concurrency: int) -> dict[str, float]:
    """Post every text through /sandbox/incoming (as fast as possible, or paced); returns text → post time."""
    from tests.reliability.stack import Account, ReliabilityStack

    assert isinstance(stack, ReliabilityStack) and isinstance(account, Account)
    posted: dict[str, float] = {}
    started = time.perf_counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(texts)):
        queue.put_nowait(index)

    async def worker() -> None:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if rate is not None:
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            posted[texts[index]] = time.time()
            response = await stack.crm_call("POST", "/sandbox/incoming", json={
                "account_phone": account.phone, "from": senders[index % len(senders)], "text": texts[index]})
            assert response.status_code == 200, response.text

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return posted


async def _stored_times(stack: object, organization_id: str, expected: int, timeout: float) -> dict[str, float]:
    """text → when its notification row was written (right after the message row, in the same request)."""
    from tests.reliability.stack import ReliabilityStack

    assert isinstance(stack, ReliabilityStack)
    pool = await stack.db()
    deadline = time.monotonic() + timeout
    while True:
        rows = await pool.fetch("SELECT body, extract(epoch FROM created_at) AS at FROM notifications "
                                "WHERE organization_id = $1", organization_id)
        if len(rows) >= expected or time.monotonic() > deadline:
            return {row["body"]: float(row["at"]) for row in rows}
        await asyncio.sleep(0.05)


async def _one_run(stack: object, config: InboundConfig, run: int) -> dict[str, float]:
    from tests.reliability.stack import ReliabilityStack

    assert isinstance(stack, ReliabilityStack)
    measured: dict[str, float] = {}

    # The store's limit, measured first on the same database.
    tenant = await stack.tenant(f"Bench insert {run}")
    measured["bare_insert_per_s"] = await bare_insert_rate(stack.admin_dsn, tenant.organization_id,
                                                           config.insert_rows, config.insert_connections)

    for mode in ("burst", "paced"):
        if mode == "burst":
            count, rate = config.messages, None
        else:
            # Latency is measured below capacity: half the rate the burst reached, for about ten seconds.
            rate = max(5.0, round(measured["msg_per_s"] * config.paced_share, 1))
            count = max(20, min(config.paced_messages, int(rate * config.paced_seconds)))
            measured["paced_rate"] = rate
        tenant = await stack.tenant(f"Bench inbound {run} {mode}")
        account = await stack.connect_account(tenant)
        senders = [phone for _, phone in await asyncio.gather(
            *(stack.sandbox_user(first_name=f"Sender{index}") for index in range(config.chats)))]
        # One message per chat first: clients exist and senders are known, as in a running CRM.
        warmup = [f"warm-up {index}" for index in range(config.chats)]
        await _post_all(stack, account, senders, warmup, rate=None, concurrency=config.concurrency)
        await _stored_times(stack, tenant.organization_id, len(warmup), timeout=120)

        texts = [f"{mode} {run}/{index} {uuid.uuid4().hex[:8]}" for index in range(count)]
        posted = await _post_all(stack, account, senders, texts, rate=rate, concurrency=config.concurrency)
        stored = await _stored_times(stack, tenant.organization_id, len(warmup) + count, timeout=300)
        missing = [text for text in texts if text not in stored]
        if missing:
            raise RuntimeError(f"{len(missing)} of {count} messages never arrived (e.g. {missing[0]!r})")
        latencies = [(stored[text] - posted[text]) * 1000 for text in texts]
        if mode == "burst":
            measured["msg_per_s"] = count / (max(stored[text] for text in texts) - min(posted.values()))
            measured["burst_p50_ms"] = percentile(latencies, 0.50)
        else:
            measured["p50_ms"] = percentile(latencies, 0.50)
            measured["p99_ms"] = percentile(latencies, 0.99)
    measured["share_of_insert"] = measured["msg_per_s"] / measured["bare_insert_per_s"]
    return measured


def run(config: InboundConfig = InboundConfig(), workdir: Path | None = None) -> BenchResult:
    runs = runs_on_one_stack("bench-inbound-", workdir, config.runs,
                             lambda stack, index: _one_run(stack, config, index))

    result = BenchResult("inbound", config={"messages": config.messages, "chats": config.chats,
                                            "paced_share_of_burst_rate": config.paced_share, "runs": config.runs})
    result.add(figure(f"end-to-end msg/s ({config.messages} burst, {config.chats} chats)", "msg/s",
                      runs["msg_per_s"], at_least=TARGET_RATE))
    result.add(figure("latency p50 (paced at half that rate)", "ms", runs["p50_ms"]))
    result.add(figure("latency p99 (paced at half that rate)", "ms", runs["p99_ms"], at_most=TARGET_P99_MS))
    result.add(figure("paced rate", "msg/s", runs["paced_rate"]))
    result.add(figure("latency p50 inside the burst", "ms", runs["burst_p50_ms"]))
    result.add(figure("bare asyncpg INSERT rows/s", "rows/s", runs["bare_insert_per_s"]))
    result.add(figure("end-to-end / bare INSERT", "ratio", runs["share_of_insert"], at_least=TARGET_SHARE_OF_INSERT))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=InboundConfig.messages)
    parser.add_argument("--runs", type=int, default=InboundConfig.runs)
    args = parser.parse_args()
    from bench.common import summary_table

    result = run(InboundConfig(messages=args.messages, runs=args.runs))
    print(summary_table([result]))
    print(result.json_line())


if __name__ == "__main__":
    main()
