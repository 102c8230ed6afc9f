"""`python -m bench` (`make bench`): every benchmark, one after another, then one summary table and one JSON line per
bench. Each figure is the median of repeated runs, with their min and max, judged against the issue's targets.

`--quick` runs the smallest configuration of each (what the test that keeps the benches from rotting runs);
`--only inbound,backlog` picks benches.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import accounts, backlog, cluster, gateway, inbound, media_inbound, outbound
from bench.common import BenchResult, summary_table


@dataclass(frozen=True)
class Bench:
    name: str
    run: Callable[..., BenchResult]
    full: Any
    smallest: Any


BENCHES = (
    Bench("inbound", inbound.run, inbound.InboundConfig(), inbound.SMALLEST),
    Bench("outbound", outbound.run, outbound.OutboundConfig(), outbound.SMALLEST),
    Bench("accounts", accounts.run, accounts.AccountsConfig(), accounts.SMALLEST),
    Bench("backlog", backlog.run, backlog.BacklogConfig(), backlog.SMALLEST),
    Bench("media_inbound", media_inbound.run, media_inbound.MediaInboundConfig(), media_inbound.SMALLEST),
    Bench("gateway", gateway.run, gateway.GatewayConfig(), gateway.SMALLEST),
    Bench("cluster", cluster.run, cluster.ClusterConfig(), cluster.SMALLEST),
)


def run_benches(names: list[str] | None = None, *, quick: bool = False, workdir: Path | None = None,
                report: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
                ) -> list[BenchResult]:
    results = []
    for bench in BENCHES:
        if names and bench.name not in names:
            continue
        started = time.monotonic()
        report(f"bench: {bench.name} …")
        result = bench.run(bench.smallest if quick else bench.full, workdir=workdir)
        report(f"bench: {bench.name} done in {time.monotonic() - started:.0f} s")
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the smallest configuration of each bench")
    parser.add_argument("--only", default="", help="comma-separated bench names: "
                                                   + ", ".join(bench.name for bench in BENCHES))
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()] or None
    unknown = set(names or []) - {bench.name for bench in BENCHES}
    if unknown:
        parser.error(f"unknown bench: {', '.join(sorted(unknown))}")
    started = time.monotonic()
    results = run_benches(names, quick=args.quick)
    print(summary_table(results))
    for result in results:
        print(result.json_line())
    print(f"bench: all done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
