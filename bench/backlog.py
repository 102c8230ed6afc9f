"""Backlog: `messages` deliveries pending in crm_server's outbox (across `chats` chats) while the receiver is down,
then drained once it is back — rows/s from the moment it answers again until the last one arrived.

Two receivers, each with batched delivery and with one event per POST: a receiver that costs nothing (crm_server's
delivery alone; `messages` rows both ways), and the real telegram-crm-webhook function storing into PostgreSQL (the
whole inbound tail; batched `messages` rows, one event per POST `function_messages` rows: the slow path, kept short),
each beside the bare asyncpg INSERT rate on the same database. The rows are written into the outbox directly, as the listener writes them, so filling the
backlog takes seconds instead of a burst through the sandbox.

Run alone: `python -m bench.backlog [--messages 10000] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import BenchResult, bench_crm_env, figure
from bench.delivery_mode import BENCH_BATCH, IGNORED_NOTE, register_delivery
from bench.receiver import FastReceiver

TARGET_ROWS_PER_S = 2000.0
TARGET_FUNCTION_SHARE_OF_INSERT = 0.15
PROJECT = "bench-backlog"


@dataclass(frozen=True)
class BacklogConfig:
    messages: int = 10_000
    chats: int = 50
    function_messages: int = 2_000
    insert_rows: int = 5_000
    insert_connections: int = 8
    runs: int = 3


SMALLEST = BacklogConfig(messages=200, chats=5, function_messages=50, insert_rows=200, runs=1)


def crm_env() -> dict[str, str]:
    from tests.reliability.stack import CRM_ENV

    # Retries capped at 1 s: the drain starts within a second of the receiver's return, not at a 15-min backoff.
    return {**CRM_ENV, "CRM_LOG_LEVEL": "warning"}


async def fill_outbox(state_dir: Path, project_id: str, phone: str, messages: int, chats: int) -> None:
    """`messages` incoming messages in the outbox, as the listener would have written them."""
    from crm_server.webhooks.incoming import IncomingMessage
    from crm_server.settings import ServerSettings, load_session_key
    from crm_server.store import Store

    settings = ServerSettings(state_dir=state_dir, sandbox=True)
    store = await Store.open(settings.resolved_database_url, load_session_key(settings))
    try:
        now = datetime.datetime.now(datetime.timezone.utc)
        events = [IncomingMessage(project_id=project_id, account_phone=phone, chat_id=700_000_000 + index % chats,
                                  message_id=index + 1, from_id=700_000_000 + index % chats,
                                  from_username=f"backlog{index % chats}", from_first_name="Backlog",
                                  from_last_name=None, from_phone=None, text=f"backlog message {index}",
                                  date=now).outbox_event() for index in range(messages)]
        for start in range(0, messages, 500):
            await store.outbox.enqueue(events[start:start + 500])
    finally:
        await store.close()


def _pending(url: str, admin_key: str) -> int:
    # /health counts the outbox for the admin only (it spans every tenant).
    return int(httpx.get(f"{url}/health", timeout=10, headers={"X-API-Key": admin_key}).json()["outbox_pending"])


def drain_to_fast_receiver(workdir: Path, config: BacklogConfig, run: int, *, batched: bool,
                           ignored: list[int]) -> float:
    """Rows/s of the backlog into a receiver that costs nothing (batched: `BENCH_BATCH`). A run whose crm_server
    ignored `batch` goes to `ignored`."""
    from tests.crm_server.server_process import CrmServerProcess, new_phone

    with FastReceiver() as receiver:
        crm = CrmServerProcess(workdir / f"fast-{run}-{'batched' if batched else 'single'}", env=crm_env(),
                               name="backlog").start()
        phone = new_phone()
        try:
            response = httpx.post(f"{crm.url}/integration/lovable/connect", headers={"X-API-Key": crm.admin_key or ""},
                                  json={"project_id": PROJECT, "phone": phone, "webhook_url": receiver.url,
                                        "secret": "bench-backlog-secret", "batch": BENCH_BATCH if batched else None},
                                  timeout=30)
            response.raise_for_status()
            if batched and not response.json().get("batch"):
                ignored.append(run)
            crm.stop()
            asyncio.run(fill_outbox(crm.state_dir, PROJECT, phone, config.messages, config.chats))
            receiver.available = False
            crm.start()
            assert _pending(crm.url, crm.admin_key or "") == config.messages
            time.sleep(1.5)  # every lane has failed at least once and waits for its retry
            receiver.available = True
            seconds = receiver.wait_for(config.messages, timeout=600)
        finally:
            crm.stop()
    return config.messages / seconds


def drain_through_the_function(workdir: Path, config: BacklogConfig, run: int, *, batched: bool,
                               ignored: list[int]) -> tuple[float, float]:
    """The same backlog into PostgreSQL through the API process, which is stopped while the backlog waits:
    (rows/s, bare INSERT rows/s on the same database). A run whose crm_server ignored `batch` goes to `ignored`."""
    from bench.inbound import bare_insert_rate
    from tests.reliability.stack import start_reliability_stack, stop_reliability_stack

    messages = config.messages if batched else config.function_messages
    stack = start_reliability_stack(workdir / f"function-{run}-{'batched' if batched else 'single'}",
                                    crm_env=bench_crm_env())
    try:
        async def prepare() -> tuple[str, str, float]:
            tenant = await stack.tenant("Bench backlog")
            account = await stack.connect_account(tenant)
            if not await register_delivery(stack, account, BENCH_BATCH if batched else None):
                ignored.append(run)
            insert_tenant = await stack.tenant("Bench backlog insert")
            insert_rate = await bare_insert_rate(stack.admin_dsn, insert_tenant.organization_id,
                                                 config.insert_rows, config.insert_connections)
            await stack.close()
            return tenant.organization_id, account.phone, insert_rate

        organization_id, phone, insert_rate = asyncio.run(prepare())
        stack.api.stop()
        stack.crm.stop()
        asyncio.run(fill_outbox(stack.crm.state_dir, organization_id, phone, messages, config.chats))
        stack.crm.start()
        time.sleep(1.5)
        stack.api.start()
        back = time.monotonic()

        async def wait() -> int:
            try:
                return await stack.wait_for_incoming(organization_id, messages, timeout=900)
            finally:
                await stack.close()

        stored = asyncio.run(wait())
        seconds = time.monotonic() - back - 1.0  # wait_for_incoming lingers 1 s to catch late duplicates
        if stored != messages:
            raise RuntimeError(f"{stored} of {messages} rows stored")
    finally:
        stop_reliability_stack(stack)
    return messages / seconds, insert_rate


def run(config: BacklogConfig = BacklogConfig(), workdir: Path | None = None) -> BenchResult:
    fast: list[float] = []
    fast_single: list[float] = []
    batched: list[float] = []
    single: list[float] = []
    batched_share: list[float] = []
    single_share: list[float] = []
    ignored: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench-backlog-", dir=workdir) as directory:
        for index in range(config.runs):
            fast.append(drain_to_fast_receiver(Path(directory), config, index, batched=True, ignored=ignored))
            fast_single.append(drain_to_fast_receiver(Path(directory), config, index, batched=False,
                                                      ignored=ignored))
        for index in range(config.runs):
            rate, insert_rate = drain_through_the_function(Path(directory), config, index, batched=True,
                                                             ignored=ignored)
            batched.append(rate)
            batched_share.append(rate / insert_rate)
            rate, insert_rate = drain_through_the_function(Path(directory), config, index, batched=False,
                                                             ignored=ignored)
            single.append(rate)
            single_share.append(rate / insert_rate)
    result = BenchResult("backlog", config={"messages": config.messages, "chats": config.chats,
                                            "function_messages": config.function_messages, "batch": BENCH_BATCH,
                                            "runs": config.runs})
    result.add(figure(f"{config.messages} pending → fast receiver, batched", "rows/s", fast,
                      at_least=TARGET_ROWS_PER_S))
    result.add(figure(f"{config.messages} pending → fast receiver, one event per POST", "rows/s", fast_single))
    result.add(figure(f"{config.messages} pending → webhook function → PostgreSQL, batched", "rows/s", batched,
                      at_least=TARGET_ROWS_PER_S))
    result.add(figure("batched through the function / bare INSERT", "ratio", batched_share,
                      at_least=TARGET_FUNCTION_SHARE_OF_INSERT))
    result.add(figure(f"{config.function_messages} pending → webhook function → PostgreSQL, one event per POST",
                      "rows/s", single))
    result.add(figure("one event per POST through the function / bare INSERT", "ratio", single_share))
    if ignored:
        result.notes.append(IGNORED_NOTE)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=BacklogConfig.messages)
    parser.add_argument("--function-messages", type=int, default=BacklogConfig.function_messages)
    parser.add_argument("--runs", type=int, default=BacklogConfig.runs)
    args = parser.parse_args()
    from bench.common import summary_table

    result = run(BacklogConfig(messages=args.messages, function_messages=args.function_messages, runs=args.runs))
    print(summary_table([result]))
    print(result.json_line())


if __name__ == "__main__":
    main()
