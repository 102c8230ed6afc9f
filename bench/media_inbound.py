"""Media inbound end to end: sandbox users send photos → crm_server (Telethon update → outbox → the chat's lane
downloads the file with Telethon → signed media.url) → telegram-crm-webhook fetches it into chat-media → a row.

Beside it, in the same run and on the same stack: the text-only rate of the same pipeline (what media costs), and
how much crm_server's peak RSS grows while it delivers small and while it delivers large files (downloads stream to
disk, so the growth must not follow the file size).

Run alone: `python -m bench.media_inbound [--photos 200] [--runs 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchResult, figure, proc_status_kb, runs_on_one_stack


@dataclass(frozen=True)
class MediaInboundConfig:
    photos: int = 200
    photo_bytes: int = 200_000
    chats: int = 20
    texts: int = 200
    # A second, smaller set of big files: the peak RSS after it shows whether memory follows file size.
    big_files: int = 10
    big_file_bytes: int = 8_000_000
    runs: int = 3
    concurrency: int = 8


SMALLEST = MediaInboundConfig(photos=6, photo_bytes=20_000, chats=2, texts=6, big_files=1, big_file_bytes=1_000_000,
                              runs=1)


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) so far, in MB."""
    peak = proc_status_kb(pid, "VmHWM")
    if peak is None:
        raise RuntimeError("no VmHWM in /proc (Linux only)")
    return peak / 1024


async def _send_all(stack: object, account: object, senders: list[str], bodies: list[dict[str, object]],
                    concurrency: int) -> float:
    """Post each body through /sandbox/incoming (the user's message enters Telethon as a real update); returns the
    moment the first post started."""
    from tests.reliability.stack import Account, ReliabilityStack

    assert isinstance(stack, ReliabilityStack) and isinstance(account, Account)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(bodies)):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            response = await stack.crm_call("POST", "/sandbox/incoming", json={
                "account_phone": account.phone, "from": senders[index % len(senders)], **bodies[index]})
            assert response.status_code == 200, response.text

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return started


async def _stored(stack: object, organization_id: str, expected: int, *, with_file: bool, timeout: float) -> float:
    """Waits until `expected` incoming rows (with a stored file, if asked) exist; returns when that was seen."""
    from tests.reliability.stack import ReliabilityStack

    assert isinstance(stack, ReliabilityStack)
    pool = await stack.db()
    condition = "AND file_url IS NOT NULL" if with_file else ""
    deadline = time.monotonic() + timeout
    while True:
        count = await pool.fetchval("SELECT count(*) FROM chat_messages WHERE organization_id = $1 "
                                    f"AND NOT is_outgoing {condition}", organization_id)
        if count >= expected:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count} of {expected} messages stored in {timeout:.0f} s")
        await asyncio.sleep(0.05)


async def _phase(stack: object, config: MediaInboundConfig, label: str, bodies: list[dict[str, object]],
                 *, with_file: bool, held: bool = False) -> tuple[float, float | None]:
    """One tenant, one account, `config.chats` senders who each wrote once before; returns (messages/s, MB of
    crm_server RSS growth while delivering, or None).

    `held`: delivery is paused while the files are injected (the sandbox's control route holds each base64 body in
    crm_server's own process: that is the load generator's memory, not the pipeline's), then the peak RSS is reset
    (/proc/<pid>/clear_refs) and delivery resumed; the rate and the growth are those of downloading and posting alone.
    """
    from tests.reliability.stack import ReliabilityStack

    assert isinstance(stack, ReliabilityStack) and stack.crm.process is not None
    pid = stack.crm.process.pid
    tenant = await stack.tenant(f"Bench media {label}")
    account = await stack.connect_account(tenant)
    senders = [phone for _, phone in await asyncio.gather(
        *(stack.sandbox_user(first_name=f"Sender{index}") for index in range(config.chats)))]
    warmup = [{"text": f"warm-up {index}"} for index in range(config.chats)]
    await _send_all(stack, account, senders, warmup, config.concurrency)
    await _stored(stack, tenant.organization_id, len(warmup), with_file=False, timeout=120)
    expected = len(bodies) if with_file else len(warmup) + len(bodies)
    if not held:
        started = await _send_all(stack, account, senders, bodies, config.concurrency)
        finished = await _stored(stack, tenant.organization_id, expected, with_file=with_file, timeout=600)
        return len(bodies) / (finished - started), None
    pause = {"project_id": tenant.organization_id, "phone": account.phone}
    await stack.crm_ok("POST", "/integration/lovable/pause", json={**pause, "paused": True})
    await _send_all(stack, account, senders, bodies, config.concurrency)
    while await stack.outbox_pending() < len(bodies):
        await asyncio.sleep(0.05)
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the current RSS
    baseline = _peak_rss_mb(pid)
    started = time.perf_counter()
    await stack.crm_ok("POST", "/integration/lovable/pause", json={**pause, "paused": False})
    finished = await _stored(stack, tenant.organization_id, expected, with_file=with_file, timeout=600)
    # VmHWM is kept in KB pages of accounting: a few KB of noise either way, never below the reset point in truth.
    return len(bodies) / (finished - started), max(0.0, _peak_rss_mb(pid) - baseline)


def _photo(size: int) -> dict[str, object]:
    return {"text": "", "media": {"kind": "photo", "mime_type": "image/jpeg",
                                  "data_base64": base64.b64encode(os.urandom(size)).decode()}}


def _document(size: int) -> dict[str, object]:
    return {"text": "", "media": {"kind": "document", "mime_type": "application/octet-stream",
                                  "file_name": f"big-{uuid.uuid4().hex[:6]}.bin",
                                  "data_base64": base64.b64encode(os.urandom(size)).decode()}}


async def _one_run(stack: object, config: MediaInboundConfig, run: int) -> dict[str, float]:
    measured: dict[str, float] = {}
    texts = [{"text": f"text {run}/{index} {uuid.uuid4().hex[:8]}"} for index in range(config.texts)]
    measured["text_msg_per_s"], _ = await _phase(stack, config, f"text {run}", texts, with_file=False)
    photos = [_photo(config.photo_bytes) for _ in range(config.photos)]
    measured["photo_msg_per_s"], _ = await _phase(stack, config, f"photos {run}", photos, with_file=True)
    measured["photo_mb_per_s"] = measured["photo_msg_per_s"] * config.photo_bytes / 1e6
    measured["photo_share_of_text"] = measured["photo_msg_per_s"] / measured["text_msg_per_s"]
    # Memory against file size: the same number of small and of big files, each delivered from a held backlog.
    small = [_document(config.photo_bytes) for _ in range(config.big_files)]
    _, measured["rss_growth_small_mb"] = await _phase(stack, config, f"small {run}", small, with_file=True, held=True)
    big = [_document(config.big_file_bytes) for _ in range(config.big_files)]
    big_rate, measured["rss_growth_big_mb"] = await _phase(stack, config, f"big {run}", big, with_file=True,
                                                           held=True)
    measured["big_mb_per_s"] = big_rate * config.big_file_bytes / 1e6
    return measured


def run(config: MediaInboundConfig = MediaInboundConfig(), workdir: Path | None = None) -> BenchResult:
    runs = runs_on_one_stack("bench-media-", workdir, config.runs,
                             lambda stack, index: _one_run(stack, config, index))

    kb = config.photo_bytes // 1000
    big_mb = config.big_file_bytes / 1e6
    result = BenchResult("media_inbound", config={
        "photos": config.photos, "photo_bytes": config.photo_bytes, "chats": config.chats, "texts": config.texts,
        "big_files": config.big_files, "big_file_bytes": config.big_file_bytes, "runs": config.runs})
    result.add(figure(f"photos end to end ({config.photos} × {kb} KB, {config.chats} chats)", "msg/s",
                      runs["photo_msg_per_s"]))
    result.add(figure("photo bytes end to end", "MB/s", runs["photo_mb_per_s"]))
    result.add(figure(f"text-only end to end, same run ({config.texts} messages)", "msg/s", runs["text_msg_per_s"]))
    result.add(figure("photos ÷ text-only", "ratio", runs["photo_share_of_text"]))
    result.add(figure(f"big files delivered from a held backlog ({config.big_files} × {big_mb:.0f} MB)", "MB/s",
                      runs["big_mb_per_s"]))
    result.add(figure(f"crm_server RSS growth delivering {config.big_files} × {kb} KB files", "MB",
                      runs["rss_growth_small_mb"]))
    result.add(figure(f"crm_server RSS growth delivering {config.big_files} × {big_mb:.0f} MB files", "MB",
                      runs["rss_growth_big_mb"]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=MediaInboundConfig.photos)
    parser.add_argument("--runs", type=int, default=MediaInboundConfig.runs)
    args = parser.parse_args()
    from bench.common import summary_table

    result = run(MediaInboundConfig(photos=args.photos, runs=args.runs))
    print(summary_table([result]))
    print(result.json_line())


if __name__ == "__main__":
    main()
