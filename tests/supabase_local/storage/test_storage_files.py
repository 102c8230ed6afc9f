"""The file store: versions are private files named by uuid, and what a crash left behind is cleared."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from supabase_local.storage.files import STALE_PENDING_SECONDS, FileStore


def test_a_store_removes_only_stale_pending_files(tmp_path: Path) -> None:
    FileStore(tmp_path)
    stale, fresh = tmp_path / "tmp" / "old.part", tmp_path / "tmp" / "new.part"
    stale.write_bytes(b"left by a crash")
    fresh.write_bytes(b"being received")
    long_ago = time.time() - STALE_PENDING_SECONDS - 60
    os.utime(stale, (long_ago, long_ago))
    FileStore(tmp_path)
    assert (stale.exists(), fresh.exists()) == (False, True)


def test_kept_files_are_private_and_named_by_version(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    pending = store.begin()
    pending.write(b"bytes")
    version = store.keep(pending)
    path = store.path_of(version)
    assert path.read_bytes() == b"bytes" and path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_version_is_only_ever_a_uuid(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        FileStore(tmp_path).path_of("../../etc/passwd")
