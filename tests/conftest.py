"""The running stack the tests share: one embedded PostgreSQL per test session, prepared with migrations and seed.

Starting PostgreSQL takes about a second; doing it once per session keeps the suite fast on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from supabase_local.database import DatabaseUrls, LocalDatabase
from tests.helpers.net import free_port

DEMO_ORGANIZATION_ID = "00000000-0000-4000-8000-000000000001"
DEMO_USER_ID = "00000000-0000-4000-8000-0000000000a1"


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tgcrm-test-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def local_database(state_dir: Path) -> Iterator[LocalDatabase]:
    database = LocalDatabase(state_dir, port=free_port(), durable=False)
    database.start()
    try:
        asyncio.run(database.prepare(seed=True))
        yield database
    finally:
        database.stop()


@pytest.fixture(scope="session")
def database_urls(local_database: LocalDatabase) -> DatabaseUrls:
    return local_database.urls()
