"""SIGUSR1 prints where every asyncio task of the process is waiting (and every thread's stack), to stderr.

A server that does not stop, or stops answering, is diagnosed from outside without a debugger: `kill -USR1 <pid>`.
The dump holds code locations only (files, lines, function names), never local variables, so no secret or message
text reaches the log.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import signal
import sys


def dump_tasks(out: io.TextIOBase | None = None) -> None:
    """Each pending task's name and stack, then each thread's stack (faulthandler), to `out` (stderr)."""
    stream = out or sys.stderr
    tasks = sorted(asyncio.all_tasks(), key=lambda task: task.get_name())
    print(f"--- {len(tasks)} asyncio tasks ---", file=stream)
    for task in tasks:
        print(f"task {task.get_name()}:", file=stream)
        task.print_stack(limit=12, file=stream)
    print("--- threads ---", file=stream, flush=True)
    if stream is sys.stderr:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


def install_task_dump(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Answer SIGUSR1 with `dump_tasks` on `loop` (the running one by default); nothing on platforms without it."""
    if not hasattr(signal, "SIGUSR1"):
        return
    (loop or asyncio.get_running_loop()).add_signal_handler(signal.SIGUSR1, dump_tasks)
