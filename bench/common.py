"""What every bench shares: figures summarised over repeated runs (median, min, max), percentiles, the summary
table and the one JSON line per bench, and the one stack the end-to-end benches run on.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


@dataclass(frozen=True)
class Figure:
    """One measured quantity over repeated runs."""

    name: str
    unit: str
    runs: tuple[float, ...]
    # What the issue asks of it, as text for the table ("≥ 1000"), and whether the median meets it.
    target: str = ""
    met: bool | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def as_json(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"median": _round(self.median), "min": _round(self.low), "max": _round(self.high),
                                   "unit": self.unit, "runs": [_round(value) for value in self.runs]}
        if self.target:
            summary.update(target=self.target, met=self.met)
        return summary


def figure(name: str, unit: str, runs: Sequence[float], *, at_least: float | None = None,
           at_most: float | None = None) -> Figure:
    """A figure, judged against a target when the issue sets one."""
    runs = tuple(float(value) for value in runs)
    median = statistics.median(runs)
    if at_least is not None:
        return Figure(name, unit, runs, f">= {at_least:g}", median >= at_least)
    if at_most is not None:
        return Figure(name, unit, runs, f"<= {at_most:g}", median <= at_most)
    return Figure(name, unit, runs)


@dataclass
class BenchResult:
    bench: str
    figures: list[Figure] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, item: Figure) -> Figure:
        self.figures.append(item)
        return item

    def json_line(self) -> str:
        return json.dumps({"bench": self.bench, "config": self.config,
                           "figures": {item.name: item.as_json() for item in self.figures},
                           **({"notes": self.notes} if self.notes else {})}, ensure_ascii=False)


def repeat(runs: int, measure: Callable[[int], dict[str, float]]) -> dict[str, list[float]]:
    """Call `measure(run_index)` `runs` times; returns each measured name's values across runs."""
    collected: dict[str, list[float]] = {}
    for index in range(runs):
        for name, value in measure(index).items():
            collected.setdefault(name, []).append(value)
    return collected


def proc_status_kb(pid: int, field: str) -> int | None:
    """A kB field of /proc/<pid>/status (`VmRSS`, `VmHWM`, …), or None when the kernel shows no such field."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def bench_crm_env() -> dict[str, str]:
    """crm_server's environment in the end-to-end benches: the reliability stack's (fast retries, pacing out of
    the way), with the leases of a deployed server. The stack's 2 s / 3 s leases exist so its tests see a killed
    server's chats taken over within seconds; in a bench they measured their own renewals: every lane extended
    its lease each second, all 50 chats of the inbound bench together, and that second's messages waited behind
    50 writes (paired paced runs at 1,000 msg/s on a
    shared, noisy machine: p99 150–620 ms with them, 67–298 ms with these)."""
    from crm_server.settings import ServerSettings

    fields = ServerSettings.model_fields
    return {"CRM_LOG_LEVEL": "warning",
            "CRM_WEBHOOK_LEASE_SECONDS": str(fields["webhook_lease_seconds"].default),
            "CRM_LEASE_TTL_SECONDS": str(fields["lease_ttl_seconds"].default)}


def runs_on_one_stack(prefix: str, workdir: Path | None, runs: int,
                      one_run: Callable[[Any, int], Awaitable[dict[str, float]]]) -> dict[str, list[float]]:
    """One reliability stack (PostgreSQL, the API process, crm_server) for every run: `await one_run(stack, index)`
    `runs` times in one event loop; returns each measured name's values across runs."""
    from tests.reliability.stack import start_reliability_stack, stop_reliability_stack

    with tempfile.TemporaryDirectory(prefix=prefix, dir=workdir) as directory:
        stack = start_reliability_stack(Path(directory), crm_env=bench_crm_env())
        try:
            async def all_runs() -> dict[str, list[float]]:
                collected: dict[str, list[float]] = {}
                try:
                    for index in range(runs):
                        for name, value in (await one_run(stack, index)).items():
                            collected.setdefault(name, []).append(value)
                finally:
                    await stack.close()
                return collected

            return asyncio.run(all_runs())
        finally:
            stop_reliability_stack(stack)


def summary_table(results: Sequence[BenchResult]) -> str:
    header = ("bench", "figure", "median", "min", "max", "unit", "target", "")
    rows = [header]
    for result in results:
        for item in result.figures:
            verdict = "" if item.met is None else ("ok" if item.met else "MISSED")
            rows.append((result.bench, item.name, _text(item.median), _text(item.low), _text(item.high), item.unit,
                         item.target, verdict))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = []
    for position, row in enumerate(rows):
        lines.append("  ".join(cell.rjust(width) if column in (2, 3, 4) else cell.ljust(width)
                               for column, (cell, width) in enumerate(zip(row, widths))).rstrip())
        if position == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _round(value: float) -> float:
    return round(value, 3) if abs(value) < 100 else round(value, 1)


def _text(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"
