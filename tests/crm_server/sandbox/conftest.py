"""Fixtures for the sandbox tests: an installed world and real TelegramClients on top of it.
Every client is a real `telethon.TelegramClient`; only the sender under it is the sandbox's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from telethon import TelegramClient
from telethon.sessions import StringSession
from telethon.sessions.abstract import Session

from crm_server.sandbox import SandboxWorld, install, uninstall

ClientFactory = Callable[..., TelegramClient]


@pytest.fixture
def world_path(tmp_path: Path) -> Path:
    return tmp_path / "telegram.sqlite3"


@pytest.fixture
def file_world(world_path: Path) -> Iterator[SandboxWorld]:
    """A world persisted in a SQLite file, installed for clients created during the test."""
    sandbox = SandboxWorld(world_path)
    install(sandbox)
    yield sandbox
    uninstall()
    sandbox.close()


@pytest.fixture
async def make_client() -> AsyncIterator[ClientFactory]:
    """Builds real TelegramClients (disconnected at teardown); flood waits are raised, never slept through."""
    clients: list[TelegramClient] = []

    def build(session: Session | None = None, **options: object) -> TelegramClient:
        client = TelegramClient(session or StringSession(), 1, "x", flood_sleep_threshold=0, **options)
        clients.append(client)
        return client

    yield build
    for client in clients:
        if client.is_connected():
            await client.disconnect()
