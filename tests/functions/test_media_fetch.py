"""Fetching an event's file from crm_server (a stand-in on a real socket): the origin rule, the cap, the size and
sha256 checks, and the private temporary file."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from functions._shared.checked_transport import CheckedTransport
from functions._shared.crm_addresses import CrmAddressPolicy
from functions._shared.errors import MediaFetchFailedError, MediaMismatchError
from functions._shared.media_fetch import fetched_media, same_origin
from tests.helpers.crm_media_standin import CrmMediaStandIn, serve_crm_media_standin

DATA = b"\x89PNG not really" * 1000


@pytest.fixture(scope="module")
def standin() -> Iterator[CrmMediaStandIn]:
    with serve_crm_media_standin() as served:
        yield served


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The functions' crm_server client as on the local stack: the checked transport, loopback only."""
    async with httpx.AsyncClient(transport=CheckedTransport(CrmAddressPolicy(local_mode=True)),
                                 follow_redirects=False) as client:
        yield client


async def fetch(http: httpx.AsyncClient, url: str, *, size: int | None = len(DATA),
                sha256: str | None = hashlib.sha256(DATA).hexdigest(), max_bytes: int = 10**8) -> bytes:
    async with fetched_media(http, url, max_bytes=max_bytes, expected_size=size, expected_sha256=sha256,
                             timeout=30) as fetched:
        return fetched.path.read_bytes()


@pytest.mark.parametrize(("url", "base", "same"), [
    ("http://127.0.0.1:8090/media/1?token=x", "http://127.0.0.1:8090", True),
    ("https://crm.example.com/media/1", "https://crm.example.com:443/", True),
    ("https://CRM.example.com./media/1", "https://crm.example.com", True),
    ("http://127.0.0.1:8091/media/1", "http://127.0.0.1:8090", False),
    ("http://crm.example.com/media/1", "https://crm.example.com", False),
    ("https://crm.example.com.evil.test/media/1", "https://crm.example.com", False),
    ("https://user@crm.example.com/media/1", "https://crm.example.com", False),
    ("file:///etc/passwd", "https://crm.example.com", False),
    ("https://crm.example.com:99999/media", "https://crm.example.com", False),
    ("/media/1", "https://crm.example.com", False),
])
def test_only_the_integrations_own_server_is_the_same_origin(url: str, base: str, same: bool) -> None:
    assert same_origin(url, base) is same


async def test_the_file_is_fetched_into_a_private_temporary_file_removed_afterwards(
        http: httpx.AsyncClient, standin: CrmMediaStandIn) -> None:
    url = standin.add(DATA)
    async with fetched_media(http, url, max_bytes=10**8, expected_size=len(DATA),
                             expected_sha256=hashlib.sha256(DATA).hexdigest(), timeout=30) as fetched:
        assert fetched.path.read_bytes() == DATA
        assert stat.S_IMODE(fetched.path.stat().st_mode) == 0o600
        kept: Path = fetched.path
    assert not kept.exists()


async def test_a_shorter_transfer_is_a_mismatch(http: httpx.AsyncClient, standin: CrmMediaStandIn) -> None:
    with pytest.raises(MediaMismatchError):
        await fetch(http, standin.add(DATA, served=DATA[:-10]))


async def test_a_longer_transfer_is_cut_off_as_a_mismatch(http: httpx.AsyncClient, standin: CrmMediaStandIn) -> None:
    with pytest.raises(MediaMismatchError):
        await fetch(http, standin.add(DATA, served=DATA + b"more"))


async def test_other_bytes_of_the_same_size_are_a_mismatch(http: httpx.AsyncClient, standin: CrmMediaStandIn) -> None:
    with pytest.raises(MediaMismatchError):
        await fetch(http, standin.add(DATA, served=DATA[::-1]))


async def test_without_a_size_the_cap_still_applies(http: httpx.AsyncClient, standin: CrmMediaStandIn) -> None:
    with pytest.raises(MediaMismatchError):
        await fetch(http, standin.add(DATA), size=None, sha256=None, max_bytes=100)


async def test_an_error_answer_is_a_failed_fetch(http: httpx.AsyncClient, standin: CrmMediaStandIn) -> None:
    with pytest.raises(MediaFetchFailedError):
        await fetch(http, standin.add(DATA, failures=[500]))
    with pytest.raises(MediaFetchFailedError):
        await fetch(http, standin.add(DATA).replace("token=", "token=wrong"))


async def test_an_address_the_transport_refuses_is_a_failed_fetch(http: httpx.AsyncClient) -> None:
    with pytest.raises(MediaFetchFailedError):
        await fetch(http, "http://169.254.169.254/latest/meta-data/")
