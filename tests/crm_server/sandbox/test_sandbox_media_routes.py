"""`POST /sandbox/incoming` with `media` on the running server: what it accepts, and each refusal naming its field."""

from __future__ import annotations

import base64
import json

import pytest

from crm_server.sandbox.world import MAX_INCOMING_FILE_BYTES
from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.helpers.net import answer_to_head, status_of

ACCOUNT = "+79994440001"
SENDER = "+79994440002"


@pytest.fixture(scope="module")
def account(admin: CrmClient) -> str:
    admin.ok(admin.post("/sandbox/accounts", json={"phone": ACCOUNT}))
    admin.user(SENDER, "routemedia")
    return ACCOUNT


def incoming(admin: CrmClient, media: object, text: str = "") -> object:
    return admin.post("/sandbox/incoming", json={"account_phone": ACCOUNT, "from": SENDER, "text": text,
                                                 "media": media})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_file_with_an_empty_caption_is_accepted(admin, account):
    response = incoming(admin, {"kind": "voice", "data_base64": b64(b"OggS voice"), "duration": 3})

    assert response.status_code == 200, response.text
    assert response.json()["message_id"] > 0


@pytest.mark.parametrize(("media", "text", "field"), [
    ({"kind": "hologram", "data_base64": b64(b"x")}, "", "media.kind"),
    ({"data_base64": b64(b"x")}, "", "media.kind"),
    ({"kind": "photo"}, "", "media.data_base64"),
    ({"kind": "photo", "data_base64": "not base64!"}, "", "media.data_base64"),
    ({"kind": "photo", "data_base64": "QUJ"}, "", "media.data_base64"),  # missing padding
    ({"kind": "photo", "data_base64": ""}, "", "media.data_base64"),
    ({"kind": "document", "data_base64": b64(b"x"), "mime_type": "not a mime"}, "", "media.mime_type"),
    ({"kind": "video", "data_base64": b64(b"x"), "duration": -1}, "", "media.duration"),
    ({"kind": "document", "data_base64": b64(b"x"), "unavailable": "yes"}, "", "media.unavailable"),
    ({"kind": "photo", "data_base64": b64(b"x")}, "c" * 1025, "text"),  # captions have at most 1024
    ("a photo", "", "media"),
    (None, "", "text"),  # no media: the text is required
])
def test_bad_media_is_422_naming_the_field(admin, account, media, text, field):
    response = incoming(admin, media, text)

    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_a_file_over_the_cap_is_413_naming_the_data(admin, account, crm_server: CrmServerProcess):
    # Declared, not sent: the server answers on the Content-Length before reading 90 MB.
    declared = len(json.dumps({"account_phone": ACCOUNT, "from": SENDER, "media": {
        "kind": "document", "data_base64": "A" * (4 * (MAX_INCOMING_FILE_BYTES // 3 + 1) + 4)}}))
    answer = answer_to_head(f"{crm_server.url}/sandbox/incoming", "POST", {
        "X-API-Key": crm_server.admin_key or "", "Content-Type": "application/json",
        "Content-Length": str(declared + 64 * 1024)})

    assert status_of(answer) == 413, answer[:300]


def test_a_text_message_is_unchanged(admin, account):
    response = admin.post("/sandbox/incoming", json={"account_phone": ACCOUNT, "from": SENDER, "text": "plain"})

    assert response.status_code == 200, response.text
