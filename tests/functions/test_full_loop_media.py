"""Files over the whole loop on real sockets: a Telegram user sends a document → crm_server downloads it and posts a
signed media.url → telegram-crm-webhook stores it in chat-media → the manager sends that very object back through
telegram-send → crm_server fetches its signed URL and the user receives the same bytes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from tests.conftest import UserClientFactory
from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.functions.conftest import CRM_MEDIA_MAX_BYTES, Organization, connect_account, sandbox_user

MakeOrganization = Callable[[], Awaitable[Organization]]
BUCKET = "chat-media"
# Every kind of file crm_server forwards, as a Telegram user sends it (name, mime type).
KINDS = {
    "photo": (None, "image/jpeg"),
    "voice": (None, "audio/ogg"),
    "audio": ("song.mp3", "audio/mpeg"),
    "video": ("clip.mp4", "video/mp4"),
    "video_note": (None, "video/mp4"),
    "document": ("contract.pdf", "application/pdf"),
    "sticker": (None, "image/webp"),
    "animation": ("funny.mp4", "video/mp4"),
}


@pytest.mark.parametrize("caption", ["", "see attached"], ids=["no caption", "caption"])
async def test_every_kind_of_file_is_stored_and_none_is_refused(
        caption: str, http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        user_client: UserClientFactory, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    _, user_phone, _ = sandbox_user(crm_admin, first_name="Vera")
    sent: dict[str, tuple[str, bytes]] = {}
    for kind, (name, mime) in KINDS.items():
        data = os.urandom(3_000 + len(sent) * 1_111)
        media = {"kind": kind, "mime_type": mime, "data_base64": base64.b64encode(data).decode()}
        if name:
            media["file_name"] = name
        incoming = crm_admin.ok(crm_admin.post("/sandbox/incoming", json={
            "account_phone": connected.phone, "from": user_phone, "text": caption, "media": media}))
        sent[kind] = (str(incoming["message_id"]), data)

    member = await user_client(organization.user_id)
    for kind, (message_id, data) in sent.items():
        row = await _wait_for_incoming(db, organization.id, message_id)
        assert (row["file_type"], row["message_text"]) == (kind, caption)
        path = row["file_url"].split(f"/{BUCKET}/", 1)[1]
        assert await member.storage.from_(BUCKET).download(path) == data, kind
    # Nothing crm_server produced was refused by our own receiver: no dead letter for this organization.
    dead = crm_admin.ok(crm_admin.get("/webhooks/deliveries", params={"project_id": organization.id,
                                                                      "state": "failed"}))
    assert dead["deliveries"] == []


async def test_a_file_over_the_servers_limit_is_stored_as_a_message_that_says_so(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    _, user_phone, _ = sandbox_user(crm_admin, first_name="Gleb")
    incoming = crm_admin.ok(crm_admin.post("/sandbox/incoming", json={
        "account_phone": connected.phone, "from": user_phone, "text": "",
        "media": {"kind": "video", "file_name": "long.mp4", "mime_type": "video/mp4",
                  "data_base64": base64.b64encode(os.urandom(CRM_MEDIA_MAX_BYTES + 1)).decode()}}))

    row = await _wait_for_incoming(db, organization.id, str(incoming["message_id"]))
    assert (row["file_type"], row["file_name"], row["file_url"]) == ("video", "long.mp4", None)
    assert row["metadata"]["media"]["unavailable"] == "too_large"
    dead = crm_admin.ok(crm_admin.get("/webhooks/deliveries", params={"project_id": organization.id,
                                                                      "state": "failed"}))
    assert dead["deliveries"] == []


async def test_a_document_travels_from_telegram_into_storage_and_back_to_telegram(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool, api_server: str,
        user_client: UserClientFactory, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    _, user_phone, _ = sandbox_user(crm_admin, first_name="Olga")
    data = os.urandom(40_000)

    incoming = crm_admin.ok(crm_admin.post("/sandbox/incoming", json={
        "account_phone": connected.phone, "from": user_phone, "text": "",
        "media": {"kind": "document", "file_name": "price list.pdf", "mime_type": "application/pdf",
                  "data_base64": base64.b64encode(data).decode()}}))
    row = await _wait_for_incoming(db, organization.id, str(incoming["message_id"]))

    assert (row["message_text"], row["file_type"], row["file_name"]) == ("", "document", "price list.pdf")
    assert row["file_url"].startswith(f"{api_server}/storage/v1/object/authenticated/{BUCKET}/{organization.id}/")
    path = row["file_url"].split(f"/{BUCKET}/", 1)[1]
    member = await user_client(organization.user_id)
    assert await member.storage.from_(BUCKET).download(path) == data

    reply = await http.post("/telegram-send", headers=organization.auth, json={
        "clientId": row["client_id"], "fileUrl": row["file_url"], "fileName": "price list.pdf",
        "fileType": "document", "text": "Here it is back"})
    assert reply.status_code == 200, reply.text
    [sent] = crm_admin.sent(connected.phone)
    assert sent["media"]["sha256"] == hashlib.sha256(data).hexdigest() and sent["text"] == "Here it is back"


async def _wait_for_incoming(db: asyncpg.Pool, organization_id: str, message_id: str,
                             timeout: float = 30.0) -> asyncpg.Record:
    deadline = time.monotonic() + timeout
    while True:
        row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE organization_id = $1 "
                                "AND external_message_id = $2 AND NOT is_outgoing", organization_id, message_id)
        if row is not None:
            return row
        assert time.monotonic() < deadline, "the incoming message never reached chat_messages"
        await asyncio.sleep(0.1)
