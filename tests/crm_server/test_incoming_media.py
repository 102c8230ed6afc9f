"""Incoming media end to end: a simulated user's file → sandbox Telegram → Telethon's download_media → the media
folder → a signed webhook on a real socket whose `media.url` serves the very bytes to plain httpx, no key needed."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.crm_server.server_process import CrmClient, CrmServerProcess, admin_client, new_phone, running_server
from tests.helpers.receiver import Receiver

PROJECT = "2b7e1c9a-6f3d-4a5b-8c2e-0000000000e1"
SECRET = "incoming-media-secret-1"
MAX_BYTES = 300_000
SERVER_ENV = {
    "CRM_ALLOW_PRIVATE_WEBHOOKS": "1",
    "CRM_WEBHOOK_RETRY_FIRST_SECONDS": "0.2",
    "CRM_WEBHOOK_RETRY_MAX_SECONDS": "1",
    "CRM_MEDIA_MAX_BYTES": str(MAX_BYTES),
}
# kind → (file_name given by the sender, mime type)
CASES = {
    "photo": (None, "image/jpeg"),
    "voice": (None, "audio/ogg"),
    "audio": ("song.mp3", "audio/mpeg"),
    "video": ("clip.mp4", "video/mp4"),
    "video_note": (None, "video/mp4"),
    "document": ("report.pdf", "application/pdf"),
    "sticker": ("sticker.webp", "image/webp"),
    "animation": ("funny.mp4", "video/mp4"),
}


@pytest.fixture(scope="module")
def server() -> Iterator[CrmServerProcess]:
    with running_server("media-in", SERVER_ENV) as process:
        yield process


@pytest.fixture(scope="module")
def admin(server: CrmServerProcess) -> Iterator[CrmClient]:
    with admin_client(server) as client:
        yield client


@pytest.fixture
def hook(receiver: Receiver) -> Receiver:
    receiver.reset()
    return receiver


def connected_account(admin: CrmClient, receiver: Receiver) -> str:
    phone = new_phone()
    admin.ok(admin.post("/integration/lovable/connect", json={
        "project_id": PROJECT, "phone": phone, "webhook_url": receiver.url, "secret": SECRET,
    }))
    admin.login(PROJECT, phone)
    return phone


def a_user(admin: CrmClient) -> str:
    phone = new_phone()
    admin.user(phone, username=f"m{phone[-7:]}", first_name="Media")
    return phone


def send_file(admin: CrmClient, account: str, sender: str, kind: str, data: bytes, text: str = "",
              **extra: object) -> None:
    media = {"kind": kind, "data_base64": base64.b64encode(data).decode(), **extra}
    admin.ok(admin.post("/sandbox/incoming", json={"account_phone": account, "from": sender, "text": text,
                                                   "media": media}))


def bodies(receiver: Receiver) -> list[dict]:
    return [item.json for item in list(receiver.accepted)]


def media_files(server: CrmServerProcess) -> list[Path]:
    return [path for path in (server.state_dir / "media").glob("*") if path.is_file()]


@pytest.mark.parametrize("kind", list(CASES))
def test_each_kind_arrives_with_its_file_behind_a_signed_url(server, admin, hook, kind) -> None:
    account, sender = connected_account(admin, hook), a_user(admin)
    name, mime = CASES[kind]
    data = os.urandom(3000 + len(kind))
    extra = {"mime_type": mime, **({"file_name": name} if name else {})}
    send_file(admin, account, sender, kind, data, **extra)
    hook.wait_for(lambda r: len(r.accepted) >= 1)
    body = bodies(hook)[0]
    media = body["media"]
    assert media["kind"] == kind and body["file_type"] == kind
    assert media["size"] == len(data) and media["sha256"] == hashlib.sha256(data).hexdigest()
    assert media["mime_type"] == mime
    if name:
        assert media["file_name"] == name
    assert media["file_name"] and body["file_name"] == media["file_name"]
    assert media["url"].startswith(server.url + "/media/") and body["file_url"] == media["url"]
    assert "error" not in media and media["expires_at"].endswith("Z")
    fetched = httpx.get(media["url"], timeout=10)  # plain httpx: no API key
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["content-length"] == str(len(data))
    assert fetched.headers["etag"] == f'"{media["sha256"]}"'
    assert fetched.headers["content-disposition"].startswith("attachment;")
    assert fetched.headers["x-content-type-options"] == "nosniff"


def test_a_file_without_caption_is_delivered_with_empty_text_and_its_caption_when_given(admin, hook) -> None:
    account, sender = connected_account(admin, hook), a_user(admin)
    send_file(admin, account, sender, "photo", b"first photo")
    send_file(admin, account, sender, "document", b"a pdf", text="the contract", file_name="c.pdf")
    hook.wait_for(lambda r: len(r.accepted) >= 2)
    assert [(body["text"], body["media"]["kind"]) for body in bodies(hook)] == [("", "photo"),
                                                                                ("the contract", "document")]


def test_an_oversize_file_is_delivered_without_url_and_not_downloaded(server, admin, hook) -> None:
    account, sender = connected_account(admin, hook), a_user(admin)
    before = len(media_files(server))
    send_file(admin, account, sender, "video", os.urandom(MAX_BYTES + 1), file_name="long.mp4")
    hook.wait_for(lambda r: len(r.accepted) >= 1)
    media = bodies(hook)[0]["media"]
    assert (media["url"], media["error"], media["size"]) == (None, "too_large", MAX_BYTES + 1)
    assert bodies(hook)[0]["file_url"] is None
    assert len(media_files(server)) == before


def test_a_file_telegram_refuses_is_delivered_as_unavailable(admin, hook) -> None:
    account, sender = connected_account(admin, hook), a_user(admin)
    send_file(admin, account, sender, "document", b"gone", file_name="gone.txt", unavailable=True)
    hook.wait_for(lambda r: len(r.accepted) >= 1)
    media = bodies(hook)[0]["media"]
    assert (media["url"], media["error"], media["kind"]) == (None, "unavailable", "document")


def test_a_chats_text_after_its_big_photo_arrives_after_it(admin, hook) -> None:
    account, sender, other = connected_account(admin, hook), a_user(admin), a_user(admin)
    send_file(admin, account, sender, "photo", os.urandom(MAX_BYTES - 10))
    admin.ok(admin.post("/sandbox/incoming", json={"account_phone": account, "from": sender, "text": "see photo"}))
    admin.ok(admin.post("/sandbox/incoming", json={"account_phone": account, "from": other, "text": "other chat"}))
    hook.wait_for(lambda r: len(r.accepted) >= 3)
    chats: dict[int, list[str]] = {}
    for body in bodies(hook):
        chats.setdefault(body["chat_id"], []).append(body["text"] or body["media"]["kind"])
    assert sorted(chats.values()) == [["other chat"], ["photo", "see photo"]]


def test_a_retried_delivery_downloads_once_and_each_try_has_a_working_url(server, admin, hook) -> None:
    account, sender = connected_account(admin, hook), a_user(admin)
    answers = iter([500])
    hook.script = lambda _: (next(answers, 200), {})
    before = len(media_files(server))
    data = b"voice note bytes" * 50
    send_file(admin, account, sender, "voice", data)
    hook.wait_for(lambda r: len(r.accepted) >= 1)
    first, second = (item.json["media"] for item in hook.received[:2])
    assert first["url"].split("?")[0] == second["url"].split("?")[0]  # the same prepared file, not a new download
    assert len(media_files(server)) == before + 1
    assert httpx.get(second["url"], timeout=10).content == data


def test_a_forged_or_altered_link_is_refused(admin, hook) -> None:
    account, sender = connected_account(admin, hook), a_user(admin)
    send_file(admin, account, sender, "document", b"secret report", file_name="r.txt")
    hook.wait_for(lambda r: len(r.accepted) >= 1)
    url = bodies(hook)[0]["media"]["url"]
    base, query = url.split("?")
    expires = query.split("&")[0].split("=")[1]
    for forged in (f"{base}?expires={expires}&signature={'0' * 64}",
                   f"{base}?expires={int(expires) + 1}&{query.split('&')[1]}",
                   f"{base}", f"{base[:-3]}abc?{query}"):
        answer = httpx.get(forged, timeout=10)
        assert answer.status_code == 403, forged
        assert answer.json()["code"] == "MEDIA_LINK_INVALID" and b"secret report" not in answer.content


def test_after_a_restart_the_file_is_fetched_again_from_telegram(admin, hook) -> None:
    """The Message kept from the update is gone with the process: the download asks Telegram for it again."""
    with tempfile.TemporaryDirectory(prefix="crm-media-restart-") as directory:
        own = CrmServerProcess(Path(directory), env=SERVER_ENV, name="media-restart").start()
        try:
            client = own.client(own.admin_key)
            account, sender = connected_account(client, hook), a_user(client)
            client.ok(client.post("/integration/lovable/pause", json={"project_id": PROJECT, "phone": account,
                                                                      "paused": True}))
            data = os.urandom(5000)
            send_file(client, account, sender, "document", data, file_name="kept.bin")
            deadline = time.monotonic() + 15
            while client.account(PROJECT, account)["webhook"]["pending"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.account(PROJECT, account)["webhook"]["pending"] == 1
            client.close()
            own.stop()
            own.start()
            client = own.client(own.admin_key)
            client.ok(client.post("/integration/lovable/pause", json={"project_id": PROJECT, "phone": account,
                                                                      "paused": False}))
            hook.wait_for(lambda r: len(r.accepted) >= 1)
            media = bodies(hook)[0]["media"]
            assert media["sha256"] == hashlib.sha256(data).hexdigest()
            assert httpx.get(media["url"], timeout=10).content == data
            client.close()
        finally:
            own.stop()


def test_the_file_is_private_on_disk_and_served_in_ranges(server, admin, hook) -> None:
    account, sender = connected_account(admin, hook), a_user(admin)
    data = os.urandom(10_000)
    send_file(admin, account, sender, "document", data, file_name='evil"\r\nname.bin')
    hook.wait_for(lambda r: len(r.accepted) >= 1)
    media = bodies(hook)[0]["media"]
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in media_files(server))
    part = httpx.get(media["url"], headers={"Range": "bytes=100-199"}, timeout=10)
    assert part.status_code == 206 and part.content == data[100:200]
    disposition = part.headers["content-disposition"]
    assert "\r" not in disposition and "\n" not in disposition and disposition.count('"') == 2
