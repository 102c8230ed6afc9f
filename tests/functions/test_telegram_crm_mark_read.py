"""telegram-crm-mark-read: a manager opened a chat, so crm_server is asked to read it up to the client's latest
message (a stand-in of crm_server on a real socket records what it was asked) and the CRM's rows become read.
Also: telegram-crm-connect subscribes the webhook to every event type, batched as configured."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from functions._shared.crm_client import CrmClient
from functions._shared.event_types import SUBSCRIBED_TYPES
from tests.crm_server.server_process import new_phone
from tests.functions.conftest import (
    FunctionsHost,
    Organization,
    create_client,
    full_payload,
    integration_secret,
    webhook_request,
)
from tests.helpers.crm_media_standin import CrmMediaStandIn, serve_crm_media_standin

MakeOrganization = Callable[[], Awaitable[Organization]]


@pytest.fixture(scope="module")
def crm_standin() -> Iterator[CrmMediaStandIn]:
    with serve_crm_media_standin() as served:
        yield served


@dataclass(frozen=True)
class Chat:
    organization: Organization
    integration_id: str
    phone: str
    key: str
    secret: str

    async def deliver(self, http: httpx.AsyncClient, payload: dict[str, Any]) -> dict[str, Any]:
        body, headers = webhook_request(self.secret, payload)
        response = await http.post(f"/telegram-crm-webhook?key={self.key}", content=body, headers=headers)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture
async def chat(http: httpx.AsyncClient, db: asyncpg.Pool, functions_host: FunctionsHost,
               make_organization: MakeOrganization, crm_standin: CrmMediaStandIn) -> Chat:
    organization = await make_organization()
    phone = new_phone()
    response = await http.post("/telegram-crm-connect", headers=organization.auth, json={
        "crmApiUrl": crm_standin.base_url, "crmApiKey": "stand-in-key", "crmPhoneNumber": phone})
    assert response.status_code == 200, response.text
    integration_id = response.json()["integrationId"]
    key, secret = await integration_secret(db, functions_host.sealer, integration_id)
    return Chat(organization, integration_id, phone, key, secret)


async def mark_read(http: httpx.AsyncClient, organization: Organization, **body: Any) -> httpx.Response:
    return await http.post("/telegram-crm-mark-read", headers=organization.auth, json=body)


async def test_connect_subscribes_to_every_event_type(chat: Chat, crm_standin: CrmMediaStandIn) -> None:
    connect = next(body for body in crm_standin.connects if body["phone"] == chat.phone)
    assert connect["events"] == list(SUBSCRIBED_TYPES)
    assert set(connect["events"]) == {"message", "message.outgoing", "message.edited", "message.deleted",
                                      "message.read", "account.status", "account.login_alert"}


async def test_connect_asks_for_batched_delivery_as_configured(chat: Chat, crm_standin: CrmMediaStandIn) -> None:
    connect = next(body for body in crm_standin.connects if body["phone"] == chat.phone)
    # The defaults (FUNCTIONS_WEBHOOK_BATCH_MAX_EVENTS=100, FUNCTIONS_WEBHOOK_BATCH_MAX_WAIT_MS=20).
    assert connect["batch"] == {"max_events": 100, "max_wait_ms": 20}


async def test_connect_asks_for_one_event_per_post_when_batching_is_off(
        http: httpx.AsyncClient, functions_host: FunctionsHost, crm_standin: CrmMediaStandIn) -> None:
    settings = functions_host.settings.model_copy(update={"webhook_batch_max_events": 0})
    assert settings.webhook_batch is None
    async with httpx.AsyncClient() as client:
        crm = CrmClient(client, crm_standin.base_url, "stand-in-key", timeout=10, send_timeout=10)
        await crm.connect(project_id=str(uuid.uuid4()), webhook_url="http://127.0.0.1:1/hook", phone=new_phone(),
                          secret="s", batch=settings.webhook_batch)
    assert crm_standin.connects[-1]["batch"] is None


async def test_opening_a_chat_reads_it_on_telegram_up_to_the_latest_message(
        http: httpx.AsyncClient, db: asyncpg.Pool, chat: Chat, crm_standin: CrmMediaStandIn) -> None:
    user = 770_000 + uuid.uuid4().int % 100_000
    for message_id in (30, 32, 31):  # the newest arrived last, but 32 is the highest Telegram id
        answer = await chat.deliver(http, full_payload(chat.organization.id, chat.phone, from_id=user,
                                                       message_id=message_id))
    client_id = answer["clientId"]

    response = await mark_read(http, chat.organization, clientId=client_id)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "maxId": 32, "integrationId": chat.integration_id, "marked": 3}
    assert [read for read in crm_standin.reads if read["phone"] == chat.phone] == \
        [{"project_id": chat.organization.id, "phone": chat.phone, "chat": str(user), "max_id": 32}]
    assert await db.fetchval("SELECT bool_and(is_read) FROM public.chat_messages WHERE client_id = $1", client_id)

    # A message after the read is unread, and the next open reads it.
    await chat.deliver(http, full_payload(chat.organization.id, chat.phone, from_id=user, message_id=33))
    assert await db.fetchval("SELECT count(*) FROM public.chat_messages WHERE client_id = $1 AND NOT is_read",
                             client_id) == 1
    again = await mark_read(http, chat.organization, clientId=client_id, integrationId=chat.integration_id)
    assert (again.json()["maxId"], again.json()["marked"]) == (33, 1)


async def test_a_client_without_telegram_messages_has_nothing_to_read(
        http: httpx.AsyncClient, db: asyncpg.Pool, chat: Chat, crm_standin: CrmMediaStandIn) -> None:
    client_id = await create_client(db, chat.organization.id, phone="+79990001122")
    response = await mark_read(http, chat.organization, clientId=client_id)
    assert response.status_code == 200, response.text
    assert response.json()["maxId"] is None
    assert not [read for read in crm_standin.reads if read["phone"] == chat.phone]


async def test_when_telegram_refuses_the_rows_stay_unread(
        http: httpx.AsyncClient, db: asyncpg.Pool, chat: Chat, crm_standin: CrmMediaStandIn) -> None:
    answer = await chat.deliver(http, full_payload(chat.organization.id, chat.phone, from_id=771_234,
                                                   message_id=40))
    crm_standin.read_status = 409
    try:
        response = await mark_read(http, chat.organization, clientId=answer["clientId"])
    finally:
        crm_standin.read_status = 200
    assert response.status_code >= 400 and response.json()["success"] is False
    assert await db.fetchval("SELECT is_read FROM public.chat_messages WHERE id = $1", answer["messageId"]) is False


async def test_another_organizations_client_is_404_and_bad_input_names_the_field(
        http: httpx.AsyncClient, chat: Chat, make_organization: MakeOrganization) -> None:
    answer = await chat.deliver(http, full_payload(chat.organization.id, chat.phone, from_id=772_345,
                                                   message_id=50))
    stranger = await make_organization()
    response = await mark_read(http, stranger, clientId=answer["clientId"])
    assert (response.status_code, response.json()["code"]) == (404, "CLIENT_NOT_FOUND")

    response = await mark_read(http, chat.organization, clientId="not-a-uuid")
    assert (response.status_code, response.json()["field"]) == (422, "clientId")
    response = await http.post("/telegram-crm-mark-read", json={"clientId": answer["clientId"]})
    assert response.status_code == 401
