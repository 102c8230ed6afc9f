"""telegram-crm-webhook with files: fetched from the integration's own crm_server (a stand-in of its /media route on a
real socket), stored in chat-media through the local Storage API, readable by the organization's users; and every
way a file can be missing, foreign, wrong or flaky."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from storage3.exceptions import StorageApiError
from supabase import AsyncClient

from functions._shared.media import MediaKind
from functions.host import create_functions_app
from tests.conftest import UserClientFactory
from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.functions.conftest import (
    FunctionsHost,
    Organization,
    connect_account,
    count,
    full_payload,
    integration_secret,
    webhook_request,
)
from tests.helpers.crm_media_standin import CrmMediaStandIn, serve_crm_media_standin

MakeOrganization = Callable[[], Awaitable[Organization]]
PHOTO = b"\xff\xd8\xff\xe0 a jpeg, as far as this test cares " * 200
BUCKET = "chat-media"


@pytest.fixture(scope="module")
def media_server() -> Iterator[CrmMediaStandIn]:
    with serve_crm_media_standin() as served:
        yield served


@dataclass(frozen=True)
class MediaHook:
    organization: Organization
    integration_id: str
    phone: str
    key: str
    secret: str

    def payload(self, message_id: int, **fields: Any) -> dict[str, Any]:
        return full_payload(self.organization.id, self.phone, from_id=880_000 + message_id % 1000,
                            message_id=message_id, **fields)


@pytest.fixture
async def media_hook(http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient, db: asyncpg.Pool,
                     functions_host: FunctionsHost, make_organization: MakeOrganization,
                     media_server: CrmMediaStandIn) -> MediaHook:
    """An integration whose crm_server is the media stand-in (connected through the real one, then re-pointed: the
    origin its media URLs must have is crmApiUrl's)."""
    organization = await make_organization()
    connected = await connect_account(http, crm, crm_admin, organization, login=False)
    await db.execute("UPDATE public.messenger_integrations SET settings = jsonb_set(settings, '{crmApiUrl}', "
                     "to_jsonb($2::text)) WHERE id = $1", connected.integration_id, media_server.base_url)
    key, secret = await integration_secret(db, functions_host.sealer, connected.integration_id)
    return MediaHook(organization, connected.integration_id, connected.phone, key, secret)


async def post(http: httpx.AsyncClient, hook: MediaHook, payload: dict[str, Any],
               event_id: str | None = None) -> httpx.Response:
    body, headers = webhook_request(hook.secret, payload, event_id=event_id)
    return await http.post(f"/telegram-crm-webhook?key={hook.key}", content=body, headers=headers)


async def stored_objects(user_client: UserClientFactory, hook: MediaHook) -> list[str]:
    """The organization's objects under its integration's folder, as one of its users lists them."""
    storage = (await user_client(hook.organization.user_id)).storage.from_(BUCKET)
    found: list[str] = []
    prefix = f"{hook.organization.id}/telegram/{hook.integration_id}"
    for chat in await storage.list(prefix):
        found.extend(f"{chat['name']}/{item['name']}" for item in await storage.list(f"{prefix}/{chat['name']}"))
    return found


async def message_row(db: asyncpg.Pool, message_id: str) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", message_id)
    assert row is not None
    return row


async def test_a_photo_without_caption_is_stored_with_its_file_readable_by_the_organization(
        http: httpx.AsyncClient, db: asyncpg.Pool, api_server: str, user_client: UserClientFactory,
        media_hook: MediaHook, media_server: CrmMediaStandIn) -> None:
    media = media_server.media(PHOTO, "photo", content_type="image/jpeg")
    payload = media_hook.payload(101, text="", media=media, file_url=media["url"], file_type="photo")
    response = await post(http, media_hook, payload)
    assert response.status_code == 200, response.text

    row = await message_row(db, response.json()["messageId"])
    path = f"{media_hook.organization.id}/telegram/{media_hook.integration_id}/{payload['chat_id']}/101-photo.jpg"
    assert (row["message_text"], row["file_type"], row["file_name"]) == ("", "photo", "photo.jpg")
    # The row keeps the object's own URL, never crm_server's expiring capability (the legacy file_url).
    assert row["file_url"] == f"{api_server}/storage/v1/object/authenticated/{BUCKET}/{path}"
    assert row["metadata"]["media"]["sha256"] == hashlib.sha256(PHOTO).hexdigest()
    member = await user_client(media_hook.organization.user_id)
    assert await member.storage.from_(BUCKET).download(path) == PHOTO
    notification = await db.fetchrow("SELECT body FROM public.notifications WHERE organization_id = $1",
                                     media_hook.organization.id)
    assert notification["body"] == "📷 Photo"


async def test_a_document_with_a_caption_keeps_both(
        http: httpx.AsyncClient, db: asyncpg.Pool, user_client: UserClientFactory, media_hook: MediaHook,
        media_server: CrmMediaStandIn) -> None:
    data = b"%PDF-1.4 an invoice"
    media = media_server.media(data, "document", content_type="application/pdf", file_name="Счёт invoice.pdf")
    response = await post(http, media_hook, media_hook.payload(102, text="Here is the invoice", media=media))
    assert response.status_code == 200, response.text
    row = await message_row(db, response.json()["messageId"])
    assert (row["message_text"], row["file_type"], row["file_name"]) == \
        ("Here is the invoice", "document", "Счёт invoice.pdf")
    assert row["file_url"].endswith("/102-invoice.pdf")
    assert await stored_objects(user_client, media_hook) == [f"{row['external_chat_id']}/102-invoice.pdf"]


async def test_a_file_crm_server_could_not_get_is_stored_as_a_message_without_it(
        http: httpx.AsyncClient, db: asyncpg.Pool, media_hook: MediaHook) -> None:
    media = {"kind": "video", "mime_type": "video/mp4", "file_name": "film.mp4", "size": 3 * 10**9,
             "sha256": None, "url": None, "expires_at": None, "error": "too_large"}
    response = await post(http, media_hook, media_hook.payload(103, text="", media=media))
    assert response.status_code == 200, response.text
    row = await message_row(db, response.json()["messageId"])
    assert (row["file_url"], row["file_type"], row["file_name"]) == (None, "video", "film.mp4")
    assert row["metadata"]["media"]["unavailable"] == "too_large"


async def test_a_file_over_our_own_limit_is_not_fetched(
        http: httpx.AsyncClient, db: asyncpg.Pool, functions_host: FunctionsHost, media_hook: MediaHook,
        media_server: CrmMediaStandIn) -> None:
    media = media_server.media(PHOTO, "document", size=functions_host.settings.media_max_bytes + 1)
    response = await post(http, media_hook, media_hook.payload(104, text="", media=media))
    assert response.status_code == 200, response.text
    row = await message_row(db, response.json()["messageId"])
    assert row["file_url"] is None and row["metadata"]["media"]["unavailable"] == "too_large"
    assert media_server.fetch_count(media["url"]) == 0


async def test_a_url_on_another_origin_is_never_fetched(
        http: httpx.AsyncClient, db: asyncpg.Pool, media_hook: MediaHook, media_server: CrmMediaStandIn) -> None:
    media = media_server.media(PHOTO, "photo")
    # The same server under another name is another origin: a signed event naming it is not trusted with a fetch.
    media["url"] = media["url"].replace("127.0.0.1", "localhost")
    response = await post(http, media_hook, media_hook.payload(105, text="", media=media))
    assert response.status_code == 200, response.text
    row = await message_row(db, response.json()["messageId"])
    assert row["file_url"] is None and row["metadata"]["media"]["unavailable"] == "foreign_url"
    assert media_server.fetch_count(media["url"]) == 0


async def test_an_expired_url_is_stored_without_the_file(
        http: httpx.AsyncClient, db: asyncpg.Pool, media_hook: MediaHook, media_server: CrmMediaStandIn) -> None:
    media = media_server.media(PHOTO, "photo", expires_at="2020-01-01T00:00:00Z")
    response = await post(http, media_hook, media_hook.payload(106, text="", media=media))
    assert response.status_code == 200, response.text
    assert (await message_row(db, response.json()["messageId"]))["metadata"]["media"]["unavailable"] == "expired"


@pytest.mark.parametrize("wrong", [{"size": len(PHOTO) + 1}, {"sha256": "0" * 64}, {"served": PHOTO[:-1]}])
async def test_a_file_that_does_not_match_the_event_is_a_5xx_and_nothing_is_stored(
        http: httpx.AsyncClient, db: asyncpg.Pool, user_client: UserClientFactory, media_hook: MediaHook,
        media_server: CrmMediaStandIn, wrong: dict[str, Any]) -> None:
    media = media_server.media(PHOTO, "photo", **wrong)
    response = await post(http, media_hook, media_hook.payload(107, text="", media=media))
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "MEDIA_MISMATCH"
    assert await count(db, "chat_messages", media_hook.organization.id) == 0
    assert await stored_objects(user_client, media_hook) == []


async def test_a_fetch_failing_twice_then_working_stores_one_object_and_one_row(
        http: httpx.AsyncClient, db: asyncpg.Pool, user_client: UserClientFactory, media_hook: MediaHook,
        media_server: CrmMediaStandIn) -> None:
    media = media_server.media(PHOTO, "photo", failures=[500, 503])
    payload = media_hook.payload(108, text="", media=media)
    # crm_server delivers the same event again after each 5xx
    statuses = [(await post(http, media_hook, payload)).status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
    assert await count(db, "chat_messages", media_hook.organization.id) == 1
    assert len(await stored_objects(user_client, media_hook)) == 1


async def test_a_redelivered_message_is_answered_as_a_duplicate_without_fetching_again(
        http: httpx.AsyncClient, db: asyncpg.Pool, user_client: UserClientFactory, media_hook: MediaHook,
        media_server: CrmMediaStandIn) -> None:
    media = media_server.media(PHOTO, "photo")
    first = await post(http, media_hook, media_hook.payload(109, text="", media=media))
    # Another event for the same Telegram message (a delivery after the replay window, or from another instance)
    again = await post(http, media_hook, media_hook.payload(109, text="", media=media,
                                                            event_id=str(uuid.uuid4())))
    assert (first.status_code, again.status_code) == (200, 200), again.text
    assert again.json()["duplicate"] is True and again.json()["messageId"] == first.json()["messageId"]
    assert media_server.fetch_count(media["url"]) == 1
    assert await count(db, "chat_messages", media_hook.organization.id) == 1
    assert len(await stored_objects(user_client, media_hook)) == 1


@pytest.mark.parametrize("kind", [kind.value for kind in MediaKind])
async def test_a_file_of_each_kind_is_stored(
        http: httpx.AsyncClient, db: asyncpg.Pool, user_client: UserClientFactory, media_hook: MediaHook,
        media_server: CrmMediaStandIn, kind: str) -> None:
    data = f"the bytes of a {kind}".encode()
    response = await post(http, media_hook, media_hook.payload(110, text="", media=media_server.media(data, kind)))
    assert response.status_code == 200, response.text
    row = await message_row(db, response.json()["messageId"])
    assert row["file_type"] == kind and row["file_url"] is not None
    path = row["file_url"].split(f"/{BUCKET}/", 1)[1]
    assert await (await user_client(media_hook.organization.user_id)).storage.from_(BUCKET).download(path) == data


async def test_another_organizations_user_cannot_read_the_file(
        http: httpx.AsyncClient, db: asyncpg.Pool, user_client: UserClientFactory, media_hook: MediaHook,
        media_server: CrmMediaStandIn, make_organization: MakeOrganization) -> None:
    response = await post(http, media_hook, media_hook.payload(111, text="", media=media_server.media(PHOTO, "photo")))
    assert response.status_code == 200, response.text
    path = (await message_row(db, response.json()["messageId"]))["file_url"].split(f"/{BUCKET}/", 1)[1]
    stranger = await user_client((await make_organization()).user_id)
    with pytest.raises(StorageApiError):
        await stranger.storage.from_(BUCKET).download(path)


async def test_in_public_mode_the_bucket_is_made_public_and_rows_keep_public_urls(
        db: asyncpg.Pool, api_server: str, functions_host: FunctionsHost, service_client: AsyncClient,
        media_hook: MediaHook, media_server: CrmMediaStandIn) -> None:
    app = create_functions_app(functions_host.settings.model_copy(update={"media_public": True}))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://functions",
                                     timeout=60.0) as client:
            response = await post(client, media_hook, media_hook.payload(
                112, text="", media=media_server.media(PHOTO, "photo")))
        assert response.status_code == 200, response.text
        file_url = (await message_row(db, response.json()["messageId"]))["file_url"]
        assert file_url.startswith(f"{api_server}/storage/v1/object/public/{BUCKET}/{media_hook.organization.id}/")
        assert (await service_client.storage.get_bucket(BUCKET)).public is True
        anonymous = httpx.get(file_url, timeout=10)  # no key, no token: what public means
        assert anonymous.status_code == 200 and anonymous.content == PHOTO
    finally:
        await app.state.runtime_holder.close()
        # The session's other tests expect the private bucket of the contract.
        await service_client.storage.update_bucket(BUCKET, {"public": False})


async def test_a_file_larger_than_storage_accepts_is_stored_as_a_message_without_it(
        http: httpx.AsyncClient, db: asyncpg.Pool, service_client: AsyncClient, media_hook: MediaHook,
        media_server: CrmMediaStandIn) -> None:
    # Storage's limit below ours: its 413 would be the same on every retry, so it is not answered as a 5xx.
    await service_client.storage.update_bucket(BUCKET, {"file_size_limit": len(PHOTO) - 1})
    try:
        response = await post(http, media_hook, media_hook.payload(113, text="", media=media_server.media(PHOTO,
                                                                                                          "photo")))
    finally:
        await service_client.storage.update_bucket(BUCKET, {"file_size_limit": None})
    assert response.status_code == 200, response.text
    row = await message_row(db, response.json()["messageId"])
    assert row["file_url"] is None and row["metadata"]["media"]["unavailable"] == "too_large"


async def test_two_deliveries_of_one_message_at_once_store_one_row_and_one_object(
        http: httpx.AsyncClient, db: asyncpg.Pool, user_client: UserClientFactory, media_hook: MediaHook,
        media_server: CrmMediaStandIn) -> None:
    media = media_server.media(PHOTO, "photo")
    # Two instances (or a retry racing a slow first attempt) post the same message under two event ids.
    answers = await asyncio.gather(*(post(http, media_hook, media_hook.payload(114, text="", media=media,
                                                                               event_id=str(uuid.uuid4())))
                                     for _ in range(2)))
    assert [answer.status_code for answer in answers] == [200, 200], [answer.text for answer in answers]
    assert sorted(answer.json()["duplicate"] for answer in answers) == [False, True]
    assert len({answer.json()["messageId"] for answer in answers}) == 1
    assert await count(db, "chat_messages", media_hook.organization.id) == 1
    assert len(await stored_objects(user_client, media_hook)) == 1  # the same path, written twice at most


async def test_a_phone_sent_photo_is_stored_like_an_incoming_one_and_fetched_once(
        http: httpx.AsyncClient, db: asyncpg.Pool, user_client: UserClientFactory, media_hook: MediaHook,
        media_server: CrmMediaStandIn) -> None:
    media = media_server.media(PHOTO, "photo", content_type="image/jpeg")
    event = {"type": "message.outgoing", "event_id": str(uuid.uuid4()), "project_id": media_hook.organization.id,
             "account_phone": media_hook.phone, "chat_id": 881_501, "to_id": 881_501, "message_id": 1501,
             "text": "the receipt", "media": media, "timestamp": "2026-12-01T10:00:00Z"}
    first = await post(http, media_hook, event)
    again = await post(http, media_hook, {**event, "event_id": str(uuid.uuid4())})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert (again.json()["duplicate"], again.json()["messageId"]) == (True, first.json()["messageId"])
    assert media_server.fetch_count(media["url"]) == 1

    row = await message_row(db, first.json()["messageId"])
    path = f"{media_hook.organization.id}/telegram/{media_hook.integration_id}/881501/1501-photo.jpg"
    assert (row["is_outgoing"], row["message_type"], row["message_text"], row["metadata"]["source"]) == \
        (True, "manager", "the receipt", "telegram_app")
    assert row["metadata"]["media"]["path"] == path
    member = await user_client(media_hook.organization.user_id)
    assert await member.storage.from_(BUCKET).download(path) == PHOTO
