"""Outbound: a manager's message through telegram-send (API process) → crm_server → the sandbox, next to crm_server's
own /telegram/send and to Telethon's `send_message` called directly on the sandbox, all in the same run.

Each path sends `messages` messages one after another (latency, not concurrency); the figures are sends/s, the
ratio to the direct send and the latency each layer adds at p50 and p99.

Run alone: `python -m bench.outbound [--messages 300] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchResult, figure, percentile

TARGET_ADDED_P50_MS = 5.0  # crm_server's own /telegram/send (issue 4)
# telegram-send: two database calls and crm_server's send over a direct Telethon send (issue 17, item 3).
TARGET_FUNCTION_ADDED_P50_MS = 10.0
TARGET_FUNCTION_ADDED_P99_MS = 20.0


@dataclass(frozen=True)
class OutboundConfig:
    messages: int = 300
    warmup: int = 20
    runs: int = 3


SMALLEST = OutboundConfig(messages=10, warmup=2, runs=1)


async def _through_the_stack(stack: object, config: OutboundConfig, run: int) -> tuple[list[float], list[float]]:
    """(telegram-send latencies, crm_server /telegram/send latencies), seconds each."""
    from tests.reliability.stack import ReliabilityStack

    assert isinstance(stack, ReliabilityStack)
    tenant = await stack.tenant(f"Bench outbound {run}")
    account = await stack.connect_account(tenant)
    user_id, _, client_id = await stack.client_who_wrote(tenant, account.phone, "hello", timeout=60,
                                                         first_name="Receiver")

    async def function_send(index: int) -> float:
        started = time.perf_counter()
        response = await stack.http.post(f"{stack.functions_url}/telegram-send", headers={
            **tenant.auth, "Idempotency-Key": f"bench-{run}-{index}-{uuid.uuid4().hex[:6]}"},
            json={"clientId": client_id, "text": f"bench reply {index}"})
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        return elapsed

    async def crm_send(index: int) -> float:
        started = time.perf_counter()
        response = await stack.crm_call("POST", "/telegram/send", json={
            "project_id": tenant.organization_id, "phone": account.phone, "to": user_id,
            "text": f"bench crm {index}"})
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text
        return elapsed

    for index in range(config.warmup):
        await function_send(-index - 1)
        await crm_send(-index - 1)
    via_function = [await function_send(index) for index in range(config.messages)]
    via_crm = [await crm_send(index) for index in range(config.messages)]
    return via_function, via_crm


def run(config: OutboundConfig = OutboundConfig(), workdir: Path | None = None) -> BenchResult:
    from bench.crm_send import direct_sends
    from tests.reliability.stack import start_reliability_stack, stop_reliability_stack

    measured: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-outbound-", dir=workdir) as directory:
        stack = start_reliability_stack(Path(directory) / "stack", crm_env={"CRM_LOG_LEVEL": "warning"})
        try:
            for index in range(config.runs):
                async def measure() -> tuple[list[float], list[float]]:
                    try:
                        return await _through_the_stack(stack, config, index)
                    finally:
                        await stack.close()

                via_function, via_crm = asyncio.run(measure())
                direct = asyncio.run(direct_sends(Path(directory) / f"direct-{index}.sqlite3", config.messages))
                values = {
                    "function_per_s": len(via_function) / sum(via_function),
                    "crm_per_s": len(via_crm) / sum(via_crm),
                    "direct_per_s": len(direct) / sum(direct),
                }
                for name, sample in (("function", via_function), ("crm", via_crm)):
                    values[f"{name}_added_p50_ms"] = (percentile(sample, 0.5) - percentile(direct, 0.5)) * 1000
                    values[f"{name}_added_p99_ms"] = (percentile(sample, 0.99) - percentile(direct, 0.99)) * 1000
                values["direct_p50_ms"] = percentile(direct, 0.5) * 1000
                values["function_ratio"] = values["function_per_s"] / values["direct_per_s"]
                values["crm_ratio"] = values["crm_per_s"] / values["direct_per_s"]
                for name, value in values.items():
                    measured.setdefault(name, []).append(value)
        finally:
            stop_reliability_stack(stack)

    result = BenchResult("outbound", config={"messages": config.messages, "runs": config.runs})
    result.add(figure("telegram-send → crm_server → sandbox", "sends/s", measured["function_per_s"]))
    result.add(figure("crm_server /telegram/send → sandbox", "sends/s", measured["crm_per_s"]))
    result.add(figure("Telethon send_message on the sandbox", "sends/s", measured["direct_per_s"]))
    result.add(figure("telegram-send / direct", "ratio", measured["function_ratio"]))
    result.add(figure("telegram-send added p50", "ms", measured["function_added_p50_ms"],
                      at_most=TARGET_FUNCTION_ADDED_P50_MS))
    result.add(figure("telegram-send added p99", "ms", measured["function_added_p99_ms"],
                      at_most=TARGET_FUNCTION_ADDED_P99_MS))
    result.add(figure("/telegram/send / direct", "ratio", measured["crm_ratio"]))
    result.add(figure("/telegram/send added p50", "ms", measured["crm_added_p50_ms"], at_most=TARGET_ADDED_P50_MS))
    result.add(figure("/telegram/send added p99", "ms", measured["crm_added_p99_ms"]))
    result.add(figure("direct send p50", "ms", measured["direct_p50_ms"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=OutboundConfig.messages)
    parser.add_argument("--runs", type=int, default=OutboundConfig.runs)
    args = parser.parse_args()
    from bench.common import summary_table

    result = run(OutboundConfig(messages=args.messages, runs=args.runs))
    print(summary_table([result]))
    print(result.json_line())


if __name__ == "__main__":
    main()
