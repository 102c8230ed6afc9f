"""telegram-send: routing by provider (crm_server in-process, Wappi.pro), smart choice of the integration, failover."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from functions._shared.sealed_settings import SettingsSealer
from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.functions.conftest import (
    Organization,
    connect_account,
    count,
    create_client,
    create_wappi_integration,
    full_payload,
    integration_secret,
    sandbox_user,
    webhook_request,
)
from tests.helpers.net import free_port
from tests.helpers.wappi_standin import WappiStandIn

MakeOrganization = Callable[[], Awaitable[Organization]]


def profile() -> tuple[str, str]:
    """A fresh Wappi profile id and its token."""
    return f"profile-{uuid.uuid4().hex[:10]}", f"token-{uuid.uuid4().hex}"


async def wappi_integration(db: asyncpg.Pool, standin: WappiStandIn, organization: Organization, *,
                            primary: bool = False, known_recipients: set[str] | None = None) -> tuple[str, str]:
    profile_id, token = profile()
    standin.add_profile(profile_id, token, known_recipients)
    return await create_wappi_integration(db, organization.id, profile_id, token, primary=primary), profile_id


async def send(http: httpx.AsyncClient, organization: Organization, **body: object) -> httpx.Response:
    return await http.post("/telegram-send", json=body, headers=organization.auth)


async def test_wappi_sends_text_with_the_profile_token_and_stores_the_row(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    integration_id, profile_id = await wappi_integration(db, wappi_standin, organization, primary=True)
    client_id = await create_client(db, organization.id, username="wappi_friend")
    response = await send(http, organization, clientId=client_id, text="Hello via Wappi")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["provider"], body["integrationId"], body["failedOver"]) == ("wappi", integration_id, False)

    [request] = [item for item in wappi_standin.requests if item.query.get("profile_id") == profile_id]
    token = wappi_standin.profiles[profile_id].token
    assert (request.method, request.path, request.headers["authorization"]) == \
        ("POST", "/tapi/sync/message/send", token)
    assert request.body == {"recipient": "@wappi_friend", "body": "Hello via Wappi"}
    [sent] = wappi_standin.sent_by(profile_id)
    assert body["messageId"] == sent["message_id"]
    row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", body["savedMessageId"])
    assert (row["integration_id"], row["external_message_id"], row["is_outgoing"], row["metadata"]["provider"]) == \
        (integration_id, sent["message_id"], True, "wappi")


async def test_wappi_sends_files_by_url(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    _, profile_id = await wappi_integration(db, wappi_standin, organization, primary=True)
    client_id = await create_client(db, organization.id, username="file_friend")
    response = await send(http, organization, clientId=client_id, text="The invoice", fileUrl="https://files.example/i.pdf",
                          fileName="invoice.pdf", fileType="document")
    assert response.status_code == 200, response.text
    [sent] = wappi_standin.sent_by(profile_id)
    assert (sent["kind"], sent["url"], sent["caption"], sent["file_name"]) == \
        ("file", "https://files.example/i.pdf", "The invoice", "invoice.pdf")
    row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", response.json()["savedMessageId"])
    assert (row["file_url"], row["file_name"], row["file_type"]) == \
        ("https://files.example/i.pdf", "invoice.pdf", "document")


async def test_wappi_tries_the_phone_when_the_username_is_unknown(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    _, profile_id = await wappi_integration(db, wappi_standin, organization, primary=True,
                                            known_recipients={"79991112233"})
    client_id = await create_client(db, organization.id, username="not_known_here", phone="+7 999 111-22-33")
    response = await send(http, organization, clientId=client_id, text="by phone")
    assert response.status_code == 200, response.text
    assert [message["recipient"] for message in wappi_standin.sent_by(profile_id)] == ["79991112233"]


async def test_a_wappi_auth_failure_is_a_clear_502(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    profile_id, _ = profile()
    wappi_standin.add_profile(profile_id, "the-real-token")
    await create_wappi_integration(db, organization.id, profile_id, "a-stale-token", primary=True)
    client_id = await create_client(db, organization.id, username="someone")
    response = await send(http, organization, clientId=client_id, text="x")
    assert response.status_code == 502
    assert response.json()["code"] == "WAPPI_AUTH_FAILED"
    assert await count(db, "chat_messages", organization.id) == 0


async def test_telegram_crm_integrations_send_through_the_server(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    user_id, _, username = sandbox_user(crm_admin)
    client_id = await create_client(db, organization.id, username=username)
    response = await send(http, organization, clientId=client_id, text="through crm_server")
    assert response.status_code == 200, response.text
    assert (response.json()["provider"], response.json()["integrationId"]) == ("telegram_crm", connected.integration_id)
    assert [(m["to_user_id"], m["text"]) for m in crm_admin.sent(connected.phone)] == [(user_id, "through crm_server")]
    assert await count(db, "chat_messages", organization.id) == 1


async def test_the_integration_that_received_the_last_incoming_message_answers(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        sealer: SettingsSealer, wappi_standin: WappiStandIn, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    primary = await connect_account(http, crm, crm_admin, organization)  # telegram_crm, primary
    wappi_id, profile_id = await wappi_integration(db, wappi_standin, organization)
    user_id, _, username = sandbox_user(crm_admin)
    client_id = await create_client(db, organization.id, username=username, telegram_user_id=str(user_id))

    # No incoming message yet: the primary sends.
    first = await send(http, organization, clientId=client_id, text="from the primary")
    assert first.json()["integrationId"] == primary.integration_id, first.text

    # A minute ago the client wrote to the Wappi account: the reply goes out from there.
    await db.execute("INSERT INTO public.chat_messages (organization_id, client_id, integration_id, message_text, "
                     "message_type, is_outgoing, created_at) VALUES ($1, $2, $3, 'hi wappi', 'client', false, "
                     "now() - interval '1 minute')", organization.id, client_id, wappi_id)
    second = await send(http, organization, clientId=client_id, text="from wappi")
    assert (second.json()["integrationId"], second.json()["provider"]) == (wappi_id, "wappi"), second.text
    assert [m["body"] for m in wappi_standin.sent_by(profile_id)] == ["from wappi"]

    # Now they wrote to the crm_server account (through its webhook): the reply follows them back.
    key, secret = await integration_secret(db, sealer, primary.integration_id)
    body, headers = webhook_request(secret, full_payload(organization.id, primary.phone, from_id=user_id,
                                                         text="hi crm", message_id=77))
    assert (await http.post(f"/telegram-crm-webhook?key={key}", content=body, headers=headers)).status_code == 200
    third = await send(http, organization, clientId=client_id, text="from crm again")
    assert third.json()["integrationId"] == primary.integration_id, third.text
    assert [m["text"] for m in crm_admin.sent(primary.phone)] == ["from the primary", "from crm again"]


async def test_a_disabled_last_incoming_integration_yields_to_the_primary(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    primary_id, primary_profile = await wappi_integration(db, wappi_standin, organization, primary=True)
    other_id, other_profile = await wappi_integration(db, wappi_standin, organization)
    client_id = await create_client(db, organization.id, username="switcher")
    await db.execute("INSERT INTO public.chat_messages (organization_id, client_id, integration_id, message_text, "
                     "message_type, is_outgoing) VALUES ($1, $2, $3, 'hi', 'client', false)",
                     organization.id, client_id, other_id)
    await db.execute("UPDATE public.messenger_integrations SET is_enabled = false WHERE id = $1", other_id)
    response = await send(http, organization, clientId=client_id, text="primary again")
    assert response.json()["integrationId"] == primary_id, response.text
    assert wappi_standin.sent_by(other_profile) == [] and len(wappi_standin.sent_by(primary_profile)) == 1


async def test_an_explicit_integration_wins(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    await wappi_integration(db, wappi_standin, organization, primary=True)
    chosen_id, chosen_profile = await wappi_integration(db, wappi_standin, organization)
    client_id = await create_client(db, organization.id, username="chooser")
    response = await send(http, organization, clientId=client_id, text="chosen", integrationId=chosen_id)
    assert response.json()["integrationId"] == chosen_id, response.text
    assert len(wappi_standin.sent_by(chosen_profile)) == 1


@pytest.mark.parametrize("failure", ["503 maintenance", "401 token refused"])
async def test_an_integration_that_refused_before_sending_fails_over_once_and_records_it(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization, failure: str) -> None:
    organization = await make_organization()
    primary_id, primary_profile = await wappi_integration(db, wappi_standin, organization, primary=True)
    backup_id, backup_profile = await wappi_integration(db, wappi_standin, organization)
    client_id = await create_client(db, organization.id, username="failover_friend")
    if failure == "503 maintenance":
        wappi_standin.fail_next(503, "maintenance")
    else:
        wappi_standin.fail_next(401, "wrong token")
    response = await send(http, organization, clientId=client_id, text="one way or another")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["integrationId"], body["failedOver"]) == (backup_id, True)
    assert wappi_standin.sent_by(primary_profile) == []
    assert [m["body"] for m in wappi_standin.sent_by(backup_profile)] == ["one way or another"]
    row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", body["savedMessageId"])
    assert (row["integration_id"], row["message_status"]) == (backup_id, "sent")
    assert row["metadata"]["failover"]["fromIntegrationId"] == primary_id
    assert await count(db, "chat_messages", organization.id) == 1  # the released claim left nothing behind


@pytest.mark.parametrize("failure", ["json 500", "text 502"])
async def test_a_failure_that_may_come_after_the_send_never_fails_over_nor_resends(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization, failure: str) -> None:
    """A 500 or a proxy's 502 may come after Wappi sent it: failing over (or retrying) would send it twice."""
    organization = await make_organization()
    _, primary_profile = await wappi_integration(db, wappi_standin, organization, primary=True)
    _, backup_profile = await wappi_integration(db, wappi_standin, organization)
    client_id = await create_client(db, organization.id, username="maybe_sent")
    if failure == "json 500":
        wappi_standin.fail_next(500, "internal")
    else:
        wappi_standin.fail_next(502, raw="<html>Bad Gateway</html>")
    key = f"maybe-{uuid.uuid4()}"
    response = await http.post("/telegram-send", headers={**organization.auth, "Idempotency-Key": key},
                               json={"clientId": client_id, "text": "at most once"})
    assert response.status_code == 502, response.text
    assert wappi_standin.sent_by(backup_profile) == []

    retried = await http.post("/telegram-send", headers={**organization.auth, "Idempotency-Key": key},
                              json={"clientId": client_id, "text": "at most once"})
    assert retried.status_code == 409 and retried.json()["code"] == "EARLIER_SEND_UNKNOWN", retried.text
    assert wappi_standin.sent_by(primary_profile) == [] and wappi_standin.sent_by(backup_profile) == []
    row = await db.fetchrow("SELECT message_status, message_text FROM public.chat_messages "
                            "WHERE organization_id = $1 AND idempotency_key = $2", organization.id, key)
    assert (row["message_status"], row["message_text"]) == ("sending", "at most once")  # the manager sees it


async def test_a_retry_after_a_wappi_send_that_was_not_stored_never_sends_again(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    """Wappi sent it, and the row stayed claimed (the database failed before it was completed): the retry finds
    the claim and does not send."""
    organization = await make_organization()
    integration_id, profile_id = await wappi_integration(db, wappi_standin, organization, primary=True)
    client_id = await create_client(db, organization.id, username="sent_not_stored")
    key = f"lost-{uuid.uuid4()}"
    await db.execute(
        "INSERT INTO public.chat_messages (organization_id, client_id, integration_id, message_text, message_type, "
        "message_status, is_outgoing, idempotency_key) VALUES ($1, $2, $3, 'hello', 'manager', 'sending', true, $4)",
        organization.id, client_id, integration_id, key)
    retried = await http.post("/telegram-send", headers={**organization.auth, "Idempotency-Key": key},
                              json={"clientId": client_id, "text": "hello"})
    assert retried.status_code == 409 and retried.json()["code"] == "EARLIER_SEND_UNKNOWN", retried.text
    assert wappi_standin.sent_by(profile_id) == []


async def test_a_crm_server_that_took_the_send_without_answering_is_a_504_with_the_key_and_no_failover(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        wappi_standin: WappiStandIn, make_organization: MakeOrganization) -> None:
    import asyncio
    import contextlib

    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    _, backup_profile = await wappi_integration(db, wappi_standin, organization)
    client_id = await create_client(db, organization.id, username="no_answer")
    # A server that takes the request and goes away without an answer (as crm_server dying after Telegram took the
    # message; a timeout is the same case, only slower).
    taken = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            taken.set()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    await db.execute("UPDATE public.messenger_integrations SET settings = jsonb_set(settings, '{crmApiUrl}', $2) "
                     "WHERE id = $1", connected.integration_id, f"http://127.0.0.1:{port}")
    try:
        response = await send(http, organization, clientId=client_id, text="no answer")
    finally:
        server.close()
    assert taken.is_set()
    assert response.status_code == 504, response.text
    body = response.json()
    assert body["code"] == "SEND_OUTCOME_UNKNOWN" and body["idempotencyKey"]
    assert wappi_standin.sent_by(backup_profile) == []
    assert await count(db, "chat_messages", organization.id) == 0


async def test_an_unreachable_crm_server_fails_over_to_wappi(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
        wappi_standin: WappiStandIn, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization)
    # The server moves away: its integration now points at a port nobody listens on.
    await db.execute("UPDATE public.messenger_integrations SET settings = jsonb_set(settings, '{crmApiUrl}', $2) "
                     "WHERE id = $1", connected.integration_id, f"http://127.0.0.1:{free_port()}")
    backup_id, backup_profile = await wappi_integration(db, wappi_standin, organization)
    client_id = await create_client(db, organization.id, username="resilient")
    response = await send(http, organization, clientId=client_id, text="still delivered")
    assert response.status_code == 200, response.text
    assert (response.json()["integrationId"], response.json()["provider"], response.json()["failedOver"]) == \
        (backup_id, "wappi", True)
    assert len(wappi_standin.sent_by(backup_profile)) == 1


async def test_a_4xx_refusal_does_not_fail_over(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    await wappi_integration(db, wappi_standin, organization, primary=True)
    _, backup_profile = await wappi_integration(db, wappi_standin, organization)
    client_id = await create_client(db, organization.id, username="refused")
    wappi_standin.fail_next(400, "Wrong platform")
    response = await send(http, organization, clientId=client_id, text="refused")
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "WAPPI_ERROR" and "Wrong platform" in response.json()["error"]
    assert wappi_standin.sent_by(backup_profile) == []
    assert await count(db, "chat_messages", organization.id) == 0


async def test_without_another_integration_a_failure_is_reported(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    await wappi_integration(db, wappi_standin, organization, primary=True)
    client_id = await create_client(db, organization.id, username="alone")
    wappi_standin.fail_next(503, "maintenance")
    response = await send(http, organization, clientId=client_id, text="nobody to take over")
    assert response.status_code == 502
    assert "maintenance" in response.json()["error"]
    assert await count(db, "chat_messages", organization.id) == 0
