"""The Telethon seam: the two private attributes crm_server uses, and a changed Telethon failing loudly at start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from telethon import TelegramClient
from telethon._updates.messagebox import MessageBox
from telethon.client import updates
from telethon.sessions import MemorySession

from crm_server.settings import ServerSettings
from crm_server.store import Store
from crm_server.telegram import telethon_seam
from crm_server.telegram.manager import AccountManager
from crm_server.telegram.telethon_seam import TelethonShapeError, check_telethon_shape


def test_telethon_has_the_shape_the_seam_relies_on() -> None:
    check_telethon_shape()


def test_shape_check_names_a_message_box_that_lost_its_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(MessageBox, "session_state")

    with pytest.raises(TelethonShapeError, match="session_state"):
        check_telethon_shape()


def test_shape_check_notices_an_update_loop_that_no_longer_reads_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    async def changed_loop(self: object) -> None:
        pass

    monkeypatch.setattr(updates.UpdateMethods, "_update_loop", changed_loop)

    with pytest.raises(TelethonShapeError, match="_update_loop"):
        check_telethon_shape()


async def test_a_manager_refuses_to_start_on_a_changed_telethon(
    monkeypatch: pytest.MonkeyPatch, store: Store, tmp_path: Path
) -> None:
    monkeypatch.delattr(MessageBox, "is_empty")
    manager = AccountManager(store, ServerSettings(state_dir=tmp_path, sandbox=True))

    with pytest.raises(TelethonShapeError, match="is_empty"):
        await manager.start()


async def test_the_hook_runs_before_each_read_of_the_update_queue() -> None:
    client = TelegramClient(MemorySession(), 1, "x")
    reads: list[int] = []
    telethon_seam.before_each_update_read(client, lambda: reads.append(client._updates_queue.qsize()))
    client._updates_queue.put_nowait("first")
    client._updates_queue.put_nowait("second")

    assert await asyncio.wait_for(client._updates_queue.get(), 1) == "first"
    assert await asyncio.wait_for(client._updates_queue.get(), 1) == "second"
    assert reads == [2, 1]  # each time before the read took its update


def test_a_client_without_a_loaded_update_state_has_none() -> None:
    client = TelegramClient(MemorySession(), 1, "x")

    assert telethon_seam.update_state(client) is None
