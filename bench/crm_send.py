"""crm_server benchmark on the Telegram sandbox: HTTP send overhead, idle memory per account, start time.

Run: `python -m bench.crm_send [--messages 300] [--accounts 1,100,1000]`. Prints a table and one JSON line.
Targets (issue 4): added p50 <= 5 ms, <= 3 MB RSS per idle account, all 1,000 stored accounts connected <= 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import percentile, proc_status_kb
from tests.helpers.net import free_port

PROJECT = "bench"
USER_PHONE = "+15550009999"
USERNAME = "bench_user"


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "TGCRM_", "TELEGRAM_"))}
    # Pacing is a policy, not a cost: take it out of the measurement.
    env.update(PYTHONUNBUFFERED="1", CRM_SEND_RATE_PER_MINUTE="1000000", CRM_SEND_BURST="1000000", CRM_LOG_LEVEL="warning")
    return env


class Server:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = ""
        self.process: subprocess.Popen[str] | None = None
        self.spawned_at = 0.0
        self.ready_after = 0.0

    def start(self) -> "Server":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.spawned_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "crm_server", "server", "--sandbox", "--port", str(self.port),
             "--state-dir", str(self.state_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=server_env(), cwd=self.state_dir,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("CRM_API_KEY="):
                self.key = line.strip().split("=", 1)[1]
            if line.strip() == "READY":
                self.ready_after = time.monotonic() - self.spawned_at
                return self
        raise RuntimeError("crm_server exited before READY")

    def rss_bytes(self) -> int:
        assert self.process is not None
        return (proc_status_kb(self.process.pid, "VmRSS") or 0) * 1024

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=120)


# --- send overhead ------------------------------------------------------------------------------


def http_sends(server: Server, count: int) -> list[float]:
    client = httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}, timeout=30)
    account = "+15550001000"
    ok = lambda r: r.raise_for_status().json()  # noqa: E731
    ok(client.post("/sandbox/users", json={"phone": USER_PHONE, "username": USERNAME}))
    ok(client.post("/telegram/auth/send-code", json={"project_id": PROJECT, "phone": account}))
    ok(client.post("/telegram/auth/sign-in", json={"project_id": PROJECT, "phone": account, "code": "12345"}))
    body = {"project_id": PROJECT, "phone": account, "to": f"@{USERNAME}", "text": "warm-up"}
    for _ in range(20):
        ok(client.post("/telegram/send", json=body))
    latencies = []
    for i in range(count):
        body["text"] = f"http {i}"
        started = time.perf_counter()
        ok(client.post("/telegram/send", json=body))
        latencies.append(time.perf_counter() - started)
    client.close()
    return latencies


async def direct_sends(world_path: Path, count: int) -> list[float]:
    from telethon import TelegramClient
    from telethon.sessions import MemorySession

    from crm_server.sandbox import LOGIN_CODE, SandboxWorld, install, uninstall

    world = SandboxWorld(world_path)
    install(world)
    try:
        world.create_user(USER_PHONE, username=USERNAME)
        account = "+15550002000"
        client = TelegramClient(MemorySession(), 1, "sandbox", flood_sleep_threshold=0)
        await client.connect()
        await client.send_code_request(account)
        await client.sign_in(account, LOGIN_CODE)
        for _ in range(20):
            await client.send_message(f"@{USERNAME}", "warm-up")
        latencies = []
        for i in range(count):
            started = time.perf_counter()
            await client.send_message(f"@{USERNAME}", f"direct {i}")
            latencies.append(time.perf_counter() - started)
        await client.disconnect()
        return latencies
    finally:
        uninstall()
        world.close()


# --- idle accounts and start time ---------------------------------------------------------------


async def prepare_accounts(state_dir: Path, count: int) -> None:
    """Log `count` accounts in, straight through AccountManager, into the store of `state_dir`."""
    from crm_server.sandbox import LOGIN_CODE, SandboxWorld, install, uninstall
    from crm_server.settings import ServerSettings, load_session_key
    from crm_server.store import Store
    from crm_server.telegram.manager import AccountManager

    settings = ServerSettings(state_dir=state_dir, sandbox=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.resolved_database_url, load_session_key(settings))
    world = SandboxWorld(settings.resolved_sandbox_world)
    install(world)
    manager = AccountManager(store, settings)
    try:
        semaphore = asyncio.Semaphore(16)

        async def one(index: int) -> None:
            async with semaphore:
                phone = f"+1555100{index:04d}"
                await manager.send_code(PROJECT, phone)
                await manager.sign_in(PROJECT, phone, LOGIN_CODE)

        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        await manager.stop()
        await store.close()
        uninstall()
        world.close()


def keep_accounts(state_dir: Path, count: int) -> None:
    database = sqlite3.connect(state_dir / "crm.sqlite3")
    with database:
        database.execute(
            "DELETE FROM accounts WHERE id NOT IN (SELECT id FROM accounts ORDER BY id LIMIT ?)", (count,)
        )
    database.close()


def idle_run(template: Path, count: int, workdir: Path) -> dict[str, float]:
    state_dir = workdir / f"idle-{count}"
    shutil.copytree(template, state_dir)
    keep_accounts(state_dir, count)
    # /health counts the connected accounts for the admin only (they span every tenant).
    admin_key = subprocess.run([sys.executable, "-m", "crm_server", "keys", "create", "--admin", "--state-dir",
                                str(state_dir)], env=server_env(), capture_output=True, text=True,
                               check=True).stdout.strip()
    server = Server(state_dir).start()
    try:
        client = httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": admin_key})
        deadline = time.monotonic() + 300
        while client.get("/health").json()["accounts_connected"] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} accounts did not connect")
            time.sleep(0.05)
        all_connected_after = time.monotonic() - server.spawned_at
        time.sleep(2.0)  # let start-up garbage settle before measuring
        rss = server.rss_bytes()
        client.close()
        return {"accounts": count, "rss_bytes": rss, "ready_s": server.ready_after, "all_connected_s": all_connected_after}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--accounts", default="1,100,1000")
    args = parser.parse_args()
    counts = sorted(int(x) for x in args.accounts.split(","))

    with tempfile.TemporaryDirectory(prefix="bench-crm-") as directory:
        workdir = Path(directory)
        server = Server(workdir / "send").start()
        try:
            via_http = http_sends(server, args.messages)
        finally:
            server.stop()
        direct = asyncio.run(direct_sends(workdir / "direct-world.sqlite3", args.messages))

        template = workdir / "template"
        prepare_started = time.monotonic()
        asyncio.run(prepare_accounts(template, max(counts)))
        prepare_s = time.monotonic() - prepare_started
        idle = [idle_run(template, count, workdir) for count in counts]

    http_p50, http_p99 = percentile(via_http, 0.5) * 1000, percentile(via_http, 0.99) * 1000
    direct_p50, direct_p99 = percentile(direct, 0.5) * 1000, percentile(direct, 0.99) * 1000
    http_rate, direct_rate = len(via_http) / sum(via_http), len(direct) / sum(direct)
    base = idle[0]
    per_account = {
        run["accounts"]: (run["rss_bytes"] - base["rss_bytes"]) / max(1, run["accounts"] - base["accounts"])
        for run in idle[1:]
    }
    result: dict[str, Any] = {
        "bench": "crm_send",
        "messages": args.messages,
        "http_sends_per_s": round(http_rate, 1),
        "direct_sends_per_s": round(direct_rate, 1),
        "ratio_http_to_direct": round(http_rate / direct_rate, 3),
        "added_p50_ms": round(http_p50 - direct_p50, 2),
        "added_p99_ms": round(http_p99 - direct_p99, 2),
        "http_p50_ms": round(http_p50, 2),
        "direct_p50_ms": round(direct_p50, 2),
        "rss_mb": {str(run["accounts"]): round(run["rss_bytes"] / 2**20, 1) for run in idle},
        "rss_mb_per_account": {str(k): round(v / 2**20, 3) for k, v in per_account.items()},
        "ready_s": {str(run["accounts"]): round(run["ready_s"], 2) for run in idle},
        "all_connected_s": {str(run["accounts"]): round(run["all_connected_s"], 2) for run in idle},
        "prepare_logins_s": round(prepare_s, 1),
    }
    rows = [
        ("sends/s via /telegram/send", f"{http_rate:.1f}"),
        ("sends/s direct client.send_message", f"{direct_rate:.1f}"),
        ("ratio http/direct", f"{http_rate / direct_rate:.3f}"),
        ("p50 ms http / direct / added", f"{http_p50:.2f} / {direct_p50:.2f} / {http_p50 - direct_p50:.2f}"),
        ("p99 ms http / direct / added", f"{http_p99:.2f} / {direct_p99:.2f} / {http_p99 - direct_p99:.2f}"),
    ]
    for run in idle:
        rows.append((f"RSS MB with {run['accounts']} idle accounts", f"{run['rss_bytes'] / 2**20:.1f}"))
    for count, value in per_account.items():
        rows.append((f"RSS MB per account (1 -> {count})", f"{value / 2**20:.3f}"))
    for run in idle:
        rows.append((f"start s, {run['accounts']} stored: READY / all connected", f"{run['ready_s']:.2f} / {run['all_connected_s']:.2f}"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
