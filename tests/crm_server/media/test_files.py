"""MediaFiles: private files, a retention sweep on an injected clock, and a disk budget that never drops pending
files (delivered ones go first, oldest delivery first; with none to drop, the download waits)."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from crm_server.media.files import CountingFile, FileTooLarge, MediaFiles
from crm_server.store.database import Store
from crm_server.store.media import MediaRecord
from crm_server.store.outbox import OutboxEvent
from crm_server.store.schema import OutboxState

# The store on both dialects (the sweep's correlated queries must hold on PostgreSQL as on SQLite).
from tests.crm_server.test_store import dialect_admin_url, store  # noqa: E402,F401

PROJECT = "org-media"
PHONE = "+79990003344"
HOUR = 3600.0


async def stored_file(store: Store, files: MediaFiles, event_id: str, content: bytes, *,
                      delivered_at: float | None = None, created_at: float | None = None) -> Path:
    """An event in the outbox (delivered at `delivered_at`, else pending) with its downloaded file."""
    message_id = int(event_id.rsplit("_", 1)[1])
    await store.outbox.enqueue([OutboxEvent(event_id=event_id, project_id=PROJECT, phone=PHONE, chat_id="7",
                                            message_id=message_id, payload={"text": ""})])
    if delivered_at is not None:
        pending = await store.outbox.list(PROJECT, OutboxState.PENDING)
        await store.outbox.mark_delivered([row.id for row in pending if row.event_id == event_id], 200, delivered_at)
    path = files.new_path()
    target = CountingFile(path, 1 << 20)
    target.write(content)
    target.close()
    await store.media.save(MediaRecord(
        event_id=event_id, media_id=f"m-{event_id}", project_id=PROJECT, phone=PHONE, kind="photo",
        mime_type="image/jpeg", file_name="a.jpg", path=str(path), size=target.size, sha256=target.sha256,
        error=None, created_at=created_at if created_at is not None else time.time(),
    ))
    return path


def test_a_counting_file_is_private_hashes_and_stops_at_its_limit(tmp_path: Path) -> None:
    target = CountingFile(tmp_path / "f", limit=10)
    target.write(b"12345")
    with pytest.raises(FileTooLarge):
        target.write(b"678901")
    target.close()
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600
    assert target.size == 11


async def test_the_sweep_removes_files_delivered_longer_ago_than_the_retention(store: Store, tmp_path: Path) -> None:
    files = MediaFiles(tmp_path / "media", store.media, max_disk_bytes=1 << 30, retention_seconds=72 * HOUR)
    now = time.time()
    old = await stored_file(store, files, "evt_x_1", b"old", delivered_at=now - 73 * HOUR)
    recent = await stored_file(store, files, "evt_x_2", b"recent", delivered_at=now - 71 * HOUR)
    pending = await stored_file(store, files, "evt_x_3", b"pending")
    assert await files.sweep(now) == 1
    assert not old.exists() and recent.exists() and pending.exists()
    assert await store.media.get("evt_x_1") is None
    # Two hours later (the clock is ours, nobody sleeps) the second one goes too; the pending one never does.
    assert await files.sweep(now + 2 * HOUR) == 1
    assert not recent.exists() and pending.exists()
    assert await files.sweep(now + 1000 * HOUR) == 0 and pending.exists()


async def test_a_file_whose_event_left_the_outbox_goes_after_the_grace(store: Store, tmp_path: Path) -> None:
    files = MediaFiles(tmp_path / "media", store.media, max_disk_bytes=1 << 30, retention_seconds=HOUR)
    now = time.time()
    path = await stored_file(store, files, "evt_x_4", b"orphan", created_at=now - 2 * HOUR)
    await store.outbox.drop_pending(PROJECT, PHONE)  # the registration was removed
    assert await files.sweep(now) == 1 and not path.exists()


async def test_a_full_budget_drops_the_oldest_delivered_file_first(store: Store, tmp_path: Path) -> None:
    files = MediaFiles(tmp_path / "media", store.media, max_disk_bytes=30, retention_seconds=72 * HOUR)
    now = time.time()
    oldest = await stored_file(store, files, "evt_x_5", b"a" * 10, delivered_at=now - 3 * HOUR)
    newer = await stored_file(store, files, "evt_x_6", b"b" * 10, delivered_at=now - 1 * HOUR)
    pending = await stored_file(store, files, "evt_x_7", b"c" * 10)
    assert await files.reserve(10)
    assert not oldest.exists() and newer.exists() and pending.exists()
    files.release(10)
    # Only pending files would be left to drop: a download bigger than what delivered files free must wait.
    assert not await files.reserve(25)
    assert pending.exists()


async def test_a_store_from_before_media_gains_the_table(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet
    from sqlalchemy import inspect

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
    old = await Store.open(url, Fernet.generate_key())
    async with old.engine.begin() as connection:
        await connection.exec_driver_sql("DROP TABLE media")
    await old.close()
    reopened = await Store.open(url, Fernet.generate_key())
    async with reopened.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "media" in tables
    assert await reopened.media.disk_used() == 0
    await reopened.close()
