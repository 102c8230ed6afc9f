"""The HTTP client every service uses (httpx over httpcore) costs no module search per request: every call between
the functions, the REST gateway and crm_server goes through it."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType

import httpx

from tests.helpers.receiver import running_receiver


class CountingFinder(importlib.abc.MetaPathFinder):
    """Counts the imports that reach the finders, i.e. of modules not in sys.modules (a failed import retried)."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        self.searched.append(fullname)
        return None


async def test_a_request_imports_nothing() -> None:
    with running_receiver() as receiver:
        url = receiver.url
        async with httpx.AsyncClient() as client:
            assert (await client.post(url, json={})).status_code < 500  # warm: the first request may import
            finder = CountingFinder()
            sys.meta_path.insert(0, finder)
            try:
                for _ in range(3):
                    await client.post(url, json={})
            finally:
                sys.meta_path.remove(finder)
    assert finder.searched == []
