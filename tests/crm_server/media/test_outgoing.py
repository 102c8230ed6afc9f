"""OutgoingFiles: a send's `file_url` is fetched only from addresses webhooks could go to (or the media allowlist),
redirects are checked again, and the body is streamed to a private file and abandoned past the size limit."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crm_server import errors
from crm_server.media.outgoing import OutgoingFiles
from crm_server.outbound_addresses import DeliveryTargets, WebhookPolicy
from tests.helpers.file_server import FileServer, running_file_server

LIMIT = 100_000


@pytest.fixture(scope="module")
def files_host() -> Iterator[FileServer]:
    with running_file_server() as server:
        yield server


def fetcher(folder: Path, private_hosts: str = "") -> OutgoingFiles:
    policy = WebhookPolicy.from_setting(False, private_hosts)
    return OutgoingFiles(folder, DeliveryTargets(policy), max_bytes=LIMIT,
                         client=lambda: httpx.AsyncClient(timeout=10, follow_redirects=False))


def allowed(server: FileServer) -> str:
    return f"127.0.0.1:{server.port}"


async def test_a_file_from_an_allowed_host_arrives_whole_and_private(files_host, tmp_path) -> None:
    data = os.urandom(50_000)
    url = files_host.put("/bucket/org/invoice.pdf", data, "application/pdf")
    got = await fetcher(tmp_path, allowed(files_host)).fetch(url, kind="document", file_name=None)
    assert got.path.read_bytes() == data and got.sha256 == hashlib.sha256(data).hexdigest()
    assert (got.file_name, got.mime_type, got.size) == ("invoice.pdf", "application/pdf", len(data))
    assert stat.S_IMODE(got.path.stat().st_mode) == 0o600
    got.discard()
    assert not got.path.exists()


async def test_a_private_address_is_refused_naming_file_url(files_host, tmp_path) -> None:
    url = files_host.put("/secret", b"internal")
    before = len(files_host.requests)
    with pytest.raises(errors.FileUnavailableError) as refused:
        await fetcher(tmp_path).fetch(url, kind="document", file_name=None)
    assert refused.value.field == "file_url"
    assert len(files_host.requests) == before  # not a single request went there
    for internal in ("http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x", "http://localhost:9/x",
                     "http://[::1]:9/x"):
        with pytest.raises(errors.FileUnavailableError):
            await fetcher(tmp_path).fetch(internal, kind="document", file_name=None)


async def test_a_redirect_to_a_private_address_is_refused(files_host, tmp_path) -> None:
    files_host.redirects["/jump"] = "http://127.0.0.2:80/admin"
    with pytest.raises(errors.FileUnavailableError) as refused:
        await fetcher(tmp_path, allowed(files_host)).fetch(f"{files_host.base}/jump", kind="photo", file_name=None)
    assert refused.value.field == "file_url"


async def test_an_allowed_redirect_is_followed(files_host, tmp_path) -> None:
    url = files_host.put("/final.png", b"\x89PNG data", "image/png")
    files_host.redirects["/short"] = url
    got = await fetcher(tmp_path, allowed(files_host)).fetch(f"{files_host.base}/short", kind="photo",
                                                             file_name=None)
    assert got.path.read_bytes() == b"\x89PNG data" and got.path.suffix == ".png"


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "streamed"])
async def test_a_file_over_the_limit_is_refused_and_nothing_kept(files_host, tmp_path, chunked) -> None:
    path = f"/big-{chunked}.bin"
    url = files_host.put(path, os.urandom(LIMIT + 1))
    if chunked:
        files_host.chunked.add(path)
    with pytest.raises(errors.FileTooLargeError) as refused:
        await fetcher(tmp_path, allowed(files_host)).fetch(url, kind="document", file_name="big.bin")
    assert refused.value.field == "file_url" and refused.value.status_code == 413
    assert list(tmp_path.iterdir()) == []


async def test_an_error_answer_or_no_server_is_file_unavailable(files_host, tmp_path) -> None:
    with pytest.raises(errors.FileUnavailableError):
        await fetcher(tmp_path, allowed(files_host)).fetch(f"{files_host.base}/missing", kind="document",
                                                           file_name=None)
    with pytest.raises(errors.FileUnavailableError):
        await fetcher(tmp_path, "127.0.0.1:9").fetch("http://127.0.0.1:9/x", kind="document", file_name=None)


async def test_a_hostile_file_name_is_made_safe(files_host, tmp_path) -> None:
    url = files_host.put("/doc", b"content", "text/plain")
    got = await fetcher(tmp_path, allowed(files_host)).fetch(url, kind="document", file_name='../../etc/"pass\nwd"')
    assert "/" not in got.file_name and '"' not in got.file_name and "\n" not in got.file_name
    assert got.path.parent == tmp_path
