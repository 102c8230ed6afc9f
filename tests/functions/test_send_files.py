"""telegram-crm-send and telegram-send with a file from chat-media: the caller's organization's object reaches the
provider as a signed URL that works, another organization's is refused, and the row keeps the object's own URL."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from tests.conftest import UserClientFactory
from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.functions.conftest import Organization, connect_account, count, create_client, create_wappi_integration
from tests.helpers.crm_media_standin import CrmMediaStandIn, serve_crm_media_standin
from tests.helpers.wappi_standin import WappiStandIn

MakeOrganization = Callable[[], Awaitable[Organization]]
BUCKET = "chat-media"
BROCHURE = b"%PDF-1.7 the brochure " * 300


@pytest.fixture(scope="module")
def crm_standin() -> Iterator[CrmMediaStandIn]:
    with serve_crm_media_standin() as served:
        yield served


@dataclass(frozen=True)
class Sender:
    organization: Organization
    integration_id: str
    client_id: str


@pytest.fixture
async def sender(http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
                 make_organization: MakeOrganization, crm_standin: CrmMediaStandIn) -> Sender:
    """An organization whose one integration sends through the stand-in (which records what crm_server gets)."""
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization, login=False)
    await db.execute("UPDATE public.messenger_integrations SET settings = jsonb_set(settings, '{crmApiUrl}', "
                     "to_jsonb($2::text)) WHERE id = $1", connected.integration_id, crm_standin.base_url)
    client_id = await create_client(db, organization.id, name="File friend", telegram_user_id="1234")
    return Sender(organization, connected.integration_id, client_id)


async def uploaded(user_client: UserClientFactory, organization: Organization, name: str = "brochure.pdf") -> str:
    """An object the organization's user uploaded into their own uploads folder (as the CRM's page does)."""
    path = f"{organization.id}/uploads/{organization.user_id}/{uuid.uuid4().hex[:8]}-{name}"
    member = await user_client(organization.user_id)
    await member.storage.from_(BUCKET).upload(path, BROCHURE, file_options={"content-type": "application/pdf"})
    return path


async def send(http: httpx.AsyncClient, organization: Organization, function: str = "telegram-crm-send",
               **body: object) -> httpx.Response:
    return await http.post(f"/{function}", json=body, headers=organization.auth)


def sends_of(standin: CrmMediaStandIn, organization: Organization) -> list[dict[str, object]]:
    return [sent["body"] for sent in standin.sends if sent["body"].get("project_id") == organization.id]


@pytest.mark.parametrize("spelling", ["authenticated", "bare"])
async def test_an_object_of_the_own_organization_reaches_crm_server_as_a_signed_url_that_works(
        http: httpx.AsyncClient, db: asyncpg.Pool, api_server: str, user_client: UserClientFactory, sender: Sender,
        crm_standin: CrmMediaStandIn, spelling: str) -> None:
    path = await uploaded(user_client, sender.organization)
    object_url = f"{api_server}/storage/v1/object/authenticated/{BUCKET}/{path}"
    response = await send(http, sender.organization, clientId=sender.client_id,
                          fileUrl=object_url if spelling == "authenticated" else f"{BUCKET}/{path}",
                          fileName="brochure.pdf", fileType="document")
    assert response.status_code == 200, response.text

    [received] = sends_of(crm_standin, sender.organization)
    assert (received["file_name"], received["file_type"], received.get("text")) == ("brochure.pdf", "document", None)
    signed = str(received["file_url"])
    assert signed.startswith(f"{api_server}/storage/v1/object/sign/{BUCKET}/") and "token=" in signed
    # What crm_server does with it: a plain GET, no key
    download = httpx.get(signed, timeout=10)
    assert download.status_code == 200 and download.content == BROCHURE

    row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", response.json()["savedMessageId"])
    assert (row["file_url"], row["file_type"], row["file_name"], row["message_text"]) == \
        (object_url, "document", "brochure.pdf", None)


async def test_another_organizations_object_is_403_naming_file_url(
        http: httpx.AsyncClient, db: asyncpg.Pool, api_server: str, user_client: UserClientFactory, sender: Sender,
        crm_standin: CrmMediaStandIn, make_organization: MakeOrganization) -> None:
    theirs = await uploaded(user_client, await make_organization())
    response = await send(http, sender.organization, clientId=sender.client_id, fileType="document",
                          fileUrl=f"{api_server}/storage/v1/object/authenticated/{BUCKET}/{theirs}")
    assert response.status_code == 403, response.text
    assert (response.json()["code"], response.json()["field"]) == ("FILE_FORBIDDEN", "fileUrl")
    assert sends_of(crm_standin, sender.organization) == []
    assert await count(db, "chat_messages", sender.organization.id) == 0


async def test_a_path_climbing_out_of_the_folder_is_422_naming_file_url(
        http: httpx.AsyncClient, sender: Sender, crm_standin: CrmMediaStandIn) -> None:
    response = await send(http, sender.organization, clientId=sender.client_id,
                          fileUrl=f"{BUCKET}/{sender.organization.id}/../{uuid.uuid4()}/x.pdf")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "fileUrl"
    assert sends_of(crm_standin, sender.organization) == []


async def test_a_missing_object_is_422_naming_file_url(
        http: httpx.AsyncClient, sender: Sender, crm_standin: CrmMediaStandIn) -> None:
    response = await send(http, sender.organization, clientId=sender.client_id,
                          fileUrl=f"{BUCKET}/{sender.organization.id}/uploads/nothing-here.pdf")
    assert response.status_code == 422, response.text
    assert (response.json()["code"], response.json()["field"]) == ("FILE_NOT_FOUND", "fileUrl")
    assert sends_of(crm_standin, sender.organization) == []


async def test_an_outside_url_goes_to_crm_server_as_it_is_and_the_row_keeps_it(
        http: httpx.AsyncClient, db: asyncpg.Pool, sender: Sender, crm_standin: CrmMediaStandIn) -> None:
    response = await send(http, sender.organization, clientId=sender.client_id, text="See the photo",
                          fileUrl="https://files.example/p.jpg", fileName="p.jpg", fileType="photo")
    assert response.status_code == 200, response.text
    [received] = sends_of(crm_standin, sender.organization)
    assert (received["file_url"], received["text"]) == ("https://files.example/p.jpg", "See the photo")
    row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", response.json()["savedMessageId"])
    assert (row["file_url"], row["file_type"], row["file_name"]) == ("https://files.example/p.jpg", "photo", "p.jpg")


async def test_a_file_type_outside_the_contract_is_422_naming_it(http: httpx.AsyncClient, sender: Sender) -> None:
    response = await send(http, sender.organization, clientId=sender.client_id,
                          fileUrl="https://files.example/p.jpg", fileType="hologram")
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "fileType"


async def test_telegram_send_passes_the_signed_url_the_same_way(
        http: httpx.AsyncClient, api_server: str, user_client: UserClientFactory, sender: Sender,
        crm_standin: CrmMediaStandIn) -> None:
    path = await uploaded(user_client, sender.organization, "voice.ogg")
    response = await send(http, sender.organization, "telegram-send", clientId=sender.client_id,
                          fileUrl=f"{BUCKET}/{path}", fileType="voice")
    assert response.status_code == 200, response.text
    [received] = sends_of(crm_standin, sender.organization)
    assert httpx.get(str(received["file_url"]), timeout=10).content == BROCHURE


async def test_wappi_gets_the_signed_url_of_a_chat_media_object(
        http: httpx.AsyncClient, db: asyncpg.Pool, user_client: UserClientFactory, wappi_standin: WappiStandIn,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    profile_id, token = f"profile-{uuid.uuid4().hex[:10]}", f"token-{uuid.uuid4().hex}"
    wappi_standin.add_profile(profile_id, token)
    await create_wappi_integration(db, organization.id, profile_id, token, primary=True)
    client_id = await create_client(db, organization.id, username="wappi_file_friend")
    path = await uploaded(user_client, organization)
    response = await send(http, organization, "telegram-send", clientId=client_id, text="The brochure",
                          fileUrl=f"{BUCKET}/{path}", fileName="brochure.pdf", fileType="document")
    assert response.status_code == 200, response.text
    [sent] = wappi_standin.sent_by(profile_id)
    assert (sent["kind"], sent["caption"], sent["file_name"]) == ("file", "The brochure", "brochure.pdf")
    assert httpx.get(sent["url"], timeout=10).content == BROCHURE
    row = await db.fetchrow("SELECT file_url FROM public.chat_messages WHERE id = $1",
                            response.json()["savedMessageId"])
    assert row["file_url"].endswith(f"/object/authenticated/{BUCKET}/{path}")
