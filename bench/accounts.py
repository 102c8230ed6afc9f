"""Accounts: crm_server's memory per idle connected account at 1, 100 and 1,000 accounts, and its start time with
1,000 stored accounts (until READY, and until every account is connected again).

The accounts are logged in once (through AccountManager on the sandbox, into a template store) and each run starts
a fresh server on a copy holding the first N of them. Reuses bench/crm_send.py's helpers.

Run alone: `python -m bench.accounts [--accounts 1,100,1000] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchResult, figure

TARGET_MB_PER_ACCOUNT = 3.0


@dataclass(frozen=True)
class AccountsConfig:
    counts: tuple[int, ...] = (1, 100, 1000)
    runs: int = 3


SMALLEST = AccountsConfig(counts=(1, 5), runs=1)


def run(config: AccountsConfig = AccountsConfig(), workdir: Path | None = None) -> BenchResult:
    from bench.crm_send import idle_run, prepare_accounts

    counts = sorted(config.counts)
    samples: dict[int, list[dict[str, float]]] = {count: [] for count in counts}
    with tempfile.TemporaryDirectory(prefix="bench-accounts-", dir=workdir) as directory:
        template = Path(directory) / "template"
        asyncio.run(prepare_accounts(template, counts[-1]))
        for index in range(config.runs):
            for count in counts:
                samples[count].append(idle_run(template, count, Path(directory) / f"run-{index}"))

    smallest, largest = counts[0], counts[-1]
    result = BenchResult("accounts", config={"counts": counts, "runs": config.runs})
    for count in counts:
        result.add(figure(f"RSS with {count} idle accounts", "MB",
                          [sample["rss_bytes"] / 2**20 for sample in samples[count]]))
    for count in counts[1:]:
        per_account = [(big["rss_bytes"] - small["rss_bytes"]) / (count - smallest) / 2**20
                       for big, small in zip(samples[count], samples[smallest])]
        result.add(figure(f"RSS per account ({smallest} → {count})", "MB", per_account,
                          at_most=TARGET_MB_PER_ACCOUNT))
    result.add(figure(f"start with {largest} stored: READY", "s", [s["ready_s"] for s in samples[largest]]))
    result.add(figure(f"start with {largest} stored: all connected", "s",
                      [s["all_connected_s"] for s in samples[largest]]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", default="1,100,1000")
    parser.add_argument("--runs", type=int, default=AccountsConfig.runs)
    args = parser.parse_args()
    from bench.common import summary_table

    result = run(AccountsConfig(counts=tuple(int(x) for x in args.accounts.split(",")), runs=args.runs))
    print(summary_table([result]))
    print(result.json_line())


if __name__ == "__main__":
    main()
