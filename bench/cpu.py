"""CPU seconds of the processes of a run, read from /proc/<pid>/stat: what the load generator's share of a run's
CPU is (the bench process ÷ every process of the stack plus the bench).

A process's CPU is its own user + system time plus what its children that it reaped used (`cutime + cstime`):
PostgreSQL's postmaster reaps its backends, so a backend that ends during the window still counts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessCpu:
    own: float  # utime + stime, seconds
    reaped: float  # cutime + cstime: children that ended and were waited for

    @property
    def total(self) -> float:
        return self.own + self.reaped


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    return text[text.rindex(")") + 2:].split()


def process_cpu(pid: int) -> ProcessCpu | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After the name: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17), 1-based as in proc(5).
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return ProcessCpu((utime + stime) / _TICKS_PER_SECOND, (cutime + cstime) / _TICKS_PER_SECOND)


def descendants(root: int) -> set[int]:
    """`root` and every process below it, now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def postmaster_pid(data_dir: Path) -> int | None:
    """The PostgreSQL server's pid, from the first line of its postmaster.pid (pg_ctl detaches it from us)."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


class CpuWindow:
    """CPU used between `start()` and `stop()` by the process trees under `roots` (sampled at both ends: a
    process that starts in between counts whole), by `generator` alone, and by each of the `named` process trees
    (e.g. crm_server, the API process, PostgreSQL: where a run's CPU goes, per process)."""

    def __init__(self, roots: Iterable[int], generator: int, named: dict[str, int] | None = None) -> None:
        self.roots = tuple(roots)
        self.generator = generator
        self.named = dict(named or {})
        self._before: dict[int, ProcessCpu] = {}
        self._trees: dict[str, set[int]] = {}  # each named tree's processes at start (a process ending meanwhile)
        self._started = 0.0
        self.total_seconds = 0.0  # every process of the roots, the generator included
        self.generator_seconds = 0.0
        self.wall_seconds = 0.0
        self.named_seconds: dict[str, float] = {}  # name → CPU seconds of its tree (its root's own time included)

    def _sample(self) -> dict[int, ProcessCpu]:
        pids = set().union(*(descendants(root) for root in self.roots)) | {self.generator}
        return {pid: cpu for pid in pids if (cpu := process_cpu(pid)) is not None}

    def start(self) -> CpuWindow:
        self._before = self._sample()
        self._trees = {name: descendants(root) for name, root in self.named.items()}
        self._started = time.monotonic()
        return self

    def stop(self) -> CpuWindow:
        after = self._sample()
        self.wall_seconds = time.monotonic() - self._started
        zero = ProcessCpu(0.0, 0.0)
        total = 0.0
        trees = {name: tree | descendants(self.named[name]) for name, tree in self._trees.items()}
        named = dict.fromkeys(self.named, 0.0)
        for pid, cpu in after.items():
            before = self._before.get(pid, zero)
            used = cpu.total - before.total
            total += used
            if pid == self.generator:
                # Its own time only: its children (the stack's processes) are the stack, not the generator.
                self.generator_seconds = cpu.own - before.own
            for name, tree in trees.items():
                if pid in tree:  # (a backend that ended meanwhile is in its postmaster's reaped time)
                    named[name] += used
        self.total_seconds = total
        self.named_seconds = named
        return self

    def utilisation(self, name: str) -> float:
        """The named tree's CPU ÷ the window's wall time (1.0 = one core busy all along)."""
        return self.named_seconds.get(name, 0.0) / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def generator_share(self) -> float:
        return self.generator_seconds / self.total_seconds if self.total_seconds > 0 else 0.0
