"""The reliability suite's stack: its own PostgreSQL cluster, the API process and crm_server, as separate processes
the tests stop, kill and restart. Shared by the directory's tests; each test works in its own organizations.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.reliability.stack import ReliabilityStack, start_reliability_stack, stop_reliability_stack


@pytest.fixture(scope="session")
def reliability_stack() -> Iterator[ReliabilityStack]:
    with tempfile.TemporaryDirectory(prefix="tgcrm-reliability-") as directory:
        stack = start_reliability_stack(Path(directory))
        try:
            yield stack
        finally:
            stop_reliability_stack(stack)


@pytest.fixture
async def stack(reliability_stack: ReliabilityStack) -> AsyncIterator[ReliabilityStack]:
    """The shared stack, with anything an earlier test left stopped started again."""
    reliability_stack.ensure_running()
    yield reliability_stack
    await reliability_stack.close()
