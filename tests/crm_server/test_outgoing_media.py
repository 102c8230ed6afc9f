"""Outgoing media end to end: `POST /telegram/send` with a `file_url` on a (allowlisted) local file host →
crm_server fetches it → Telethon uploads it with the kind's attributes → the sandbox Telegram stores what arrived."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import pytest

from tests.crm_server.server_process import CrmClient, CrmServerProcess, admin_client, new_phone, running_server
from tests.helpers.file_server import FileServer, running_file_server

PROJECT = "2b7e1c9a-6f3d-4a5b-8c2e-0000000000e2"
MAX_BYTES = 200_000
# kind → (file name, content type); what the sender names is what the recipient sees
CASES = {
    "photo": ("picture.jpg", "image/jpeg"),
    "document": ("invoice.pdf", "application/pdf"),
    "voice": ("note.ogg", "audio/ogg"),
    "video": ("clip.mp4", "video/mp4"),
    "audio": ("song.mp3", "audio/mpeg"),
}


@pytest.fixture(scope="module")
def files_host() -> Iterator[FileServer]:
    with running_file_server() as server:
        yield server


@pytest.fixture(scope="module")
def server(files_host: FileServer) -> Iterator[CrmServerProcess]:
    env = {"CRM_PRIVATE_MEDIA_HOSTS": f"127.0.0.1:{files_host.port}", "CRM_MEDIA_MAX_BYTES": str(MAX_BYTES),
           "CRM_SEND_BURST": "100"}
    with running_server("media-out", env) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: CrmServerProcess) -> Iterator[CrmClient]:
    with admin_client(server) as client:
        yield client


@pytest.fixture
def account(admin: CrmClient) -> str:
    phone = new_phone()
    admin.login(PROJECT, phone)
    return phone


def recipient(admin: CrmClient) -> str:
    phone = new_phone()
    username = f"r{phone[-8:]}"
    admin.user(phone, username=username)
    return f"@{username}"


@pytest.mark.parametrize("kind", list(CASES))
def test_each_kind_is_sent_with_identical_bytes_kind_and_name(server, admin, account, files_host, kind) -> None:
    name, content_type = CASES[kind]
    data = os.urandom(20_000 + len(kind))
    url = files_host.put(f"/chat-media/{kind}/{os.urandom(4).hex()}", data, content_type)
    response = admin.send(PROJECT, account, recipient(admin), "", file_url=url, file_name=name, file_type=kind)
    assert response.status_code == 200, response.text
    [sent] = admin.sent(account)
    assert sent["media"]["kind"] == kind
    assert sent["media"]["size"] == len(data) and sent["media"]["sha256"] == hashlib.sha256(data).hexdigest()
    if kind != "photo":  # Telegram keeps no name for a photo
        assert sent["media"]["file_name"] == name
    assert sent["text"] == ""
    assert list((server.state_dir / "media" / "outgoing").glob("*")) == []  # the fetched copy is gone


def test_a_caption_travels_with_the_file(admin, account, files_host) -> None:
    url = files_host.put("/chat-media/captioned.pdf", b"%PDF-1.4 tiny", "application/pdf")
    response = admin.send(PROJECT, account, recipient(admin), "the invoice", file_url=url, file_type="document")
    assert response.status_code == 200, response.text
    [sent] = admin.sent(account)
    assert sent["text"] == "the invoice" and sent["media"]["file_name"] == "captioned.pdf"


def test_a_file_over_the_limit_is_refused_and_nothing_sent(admin, account, files_host) -> None:
    url = files_host.put("/chat-media/huge.bin", os.urandom(MAX_BYTES + 1))
    response = admin.send(PROJECT, account, recipient(admin), "", file_url=url, file_type="document")
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "FILE_TOO_LARGE" and response.json()["field"] == "file_url"
    assert admin.sent(account) == []


def test_a_private_address_not_on_the_list_is_refused(admin, account, server) -> None:
    response = admin.send(PROJECT, account, recipient(admin), "", file_url=f"{server.url}/health",
                          file_type="document")
    assert response.status_code == 422 and response.json()["code"] == "FILE_UNAVAILABLE"
    assert response.json()["field"] == "file_url"
    assert admin.sent(account) == []


def test_an_idempotent_file_send_is_fetched_and_sent_once(admin, account, files_host) -> None:
    path = "/chat-media/once.pdf"
    url = files_host.put(path, b"%PDF once", "application/pdf")
    to = recipient(admin)
    headers = {"Idempotency-Key": f"file-{os.urandom(4).hex()}"}
    first = admin.send(PROJECT, account, to, "", file_url=url, file_type="document", headers=headers)
    second = admin.send(PROJECT, account, to, "", file_url=url, file_type="document", headers=headers)
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
    assert len(admin.sent(account)) == 1 and files_host.requests.count(path) == 1
