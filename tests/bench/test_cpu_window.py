"""bench/cpu.py counts a run's CPU where it was spent: the generator's own time apart from the processes below it,
those still running and those that ended during the window (reaped, so only their parent's stat shows them)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.cpu import CpuWindow, descendants, process_cpu

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_the_window_counts_children_that_ended_and_children_still_running_apart_from_the_generator() -> None:
    window = CpuWindow([os.getpid()], generator=os.getpid()).start()
    subprocess.run([sys.executable, "-c", BURN], check=True)  # ends inside the window: reaped by us
    running = subprocess.Popen([sys.executable, "-c", BURN + "import sys; sys.stdin.read()\n"],
                               stdin=subprocess.PIPE)
    try:
        while (cpu := process_cpu(running.pid)) is None or cpu.own < 0.25:
            time.sleep(0.01)  # until it has burnt its share (it then waits on stdin, alive)
        assert running.pid in descendants(os.getpid())
        # The generator's own share: burnt here, since its polling above may stay under one clock tick (it then
        # reads 0 and the share below is 0, not a fraction).
        exec(BURN)
        window.stop()
    finally:
        running.communicate(b"")
    children = window.total_seconds - window.generator_seconds
    assert children >= 0.5  # both children's 0.3 s of CPU, the ended one through our cutime
    assert 0 < window.generator_share < 1


def test_a_named_process_tree_gets_its_own_cpu_and_share_of_a_core() -> None:
    """Where a run's CPU goes, per process: a named child's tree (here it and a grandchild that ends inside the
    window, reaped by the child) apart from the generator and its other children."""
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys\nsys.stdin.readline()\n"
                              f"subprocess.run([sys.executable, '-c', {BURN!r}])\n" + BURN + "sys.stdin.read()\n"],
                             stdin=subprocess.PIPE)
    try:
        window = CpuWindow([os.getpid()], generator=os.getpid(), named={"child": child.pid}).start()
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        while (cpu := process_cpu(child.pid)) is None or cpu.total < 0.55:
            time.sleep(0.01)
        subprocess.run([sys.executable, "-c", BURN], check=True)  # the generator's other child: not the named one
        window.stop()
    finally:
        child.communicate(b"")
    assert 0.55 <= window.named_seconds["child"] < window.total_seconds - 0.25
    assert 0 < window.utilisation("child") <= 1.0
