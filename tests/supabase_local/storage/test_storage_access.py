"""RLS decides Storage access as in Supabase: the `chat-media` policies let an organization's users read its folder
and upload under their own uploads folder; other organizations and anon are refused; tokens are checked."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
from storage3 import AsyncStorageClient
from storage3.exceptions import StorageApiError

from tests.conftest import DEMO_ORGANIZATION_ID, DEMO_USER_ID, OrganizationMember, UserClientFactory

BUCKET = "chat-media"


@pytest.fixture(scope="module")
async def demo_object(service_storage: AsyncStorageClient) -> str:
    """An object of the demo organization, written by the service role as the webhook function writes media."""
    name = f"{DEMO_ORGANIZATION_ID}/chats/{uuid.uuid4()}/photo.jpg"
    await service_storage.from_(BUCKET).upload(name, b"jpeg bytes", {"content-type": "image/jpeg"})
    return name


@pytest.fixture(scope="module")
async def demo_member(user_client: UserClientFactory) -> AsyncStorageClient:
    return (await user_client(DEMO_USER_ID)).storage


@pytest.fixture(scope="module")
async def other_member(user_client: UserClientFactory,
                       other_organization: OrganizationMember) -> AsyncStorageClient:
    return (await user_client(other_organization.user_id)).storage


async def test_member_reads_their_organizations_object(demo_member: AsyncStorageClient, demo_object: str) -> None:
    bucket = demo_member.from_(BUCKET)
    assert await bucket.download(demo_object) == b"jpeg bytes"
    signed = await bucket.create_signed_url(demo_object, 60)
    async with httpx.AsyncClient() as http:
        assert (await http.get(signed["signedURL"])).content == b"jpeg bytes"
    listed = await bucket.list(demo_object.rsplit("/", 1)[0])
    assert [item["name"] for item in listed] == ["photo.jpg"]


async def test_member_of_another_organization_is_refused(other_member: AsyncStorageClient, demo_object: str) -> None:
    bucket = other_member.from_(BUCKET)
    with pytest.raises(StorageApiError) as read:
        await bucket.download(demo_object)
    with pytest.raises(StorageApiError) as signed:
        await bucket.create_signed_url(demo_object, 60)
    assert (read.value.status, read.value.code) == ("404", "not_found")
    assert signed.value.status == "404"
    assert await bucket.list(DEMO_ORGANIZATION_ID) == []
    assert await bucket.remove([demo_object]) == []


async def test_anon_is_refused_on_a_private_bucket(anon_client, demo_object: str,  # type: ignore[no-untyped-def]
                                                   api_server: str) -> None:
    with pytest.raises(StorageApiError) as raised:
        await anon_client.storage.from_(BUCKET).download(demo_object)
    async with httpx.AsyncClient() as http:
        public = await http.get(f"{api_server}/storage/v1/object/public/{BUCKET}/{demo_object}")
    assert raised.value.status == "404"
    assert public.status_code == 400 and public.json()["error"] == "Bucket not found"


async def test_member_uploads_only_under_their_uploads_folder(demo_member: AsyncStorageClient,
                                                              service_storage: AsyncStorageClient,
                                                              other_organization: OrganizationMember) -> None:
    bucket = demo_member.from_(BUCKET)
    own = f"{DEMO_ORGANIZATION_ID}/uploads/{DEMO_USER_ID}/{uuid.uuid4()}.txt"
    await bucket.upload(own, b"mine")
    assert await bucket.download(own) == b"mine"
    refused = [
        f"{DEMO_ORGANIZATION_ID}/chats/x/{uuid.uuid4()}.txt",  # the organization's media: service role only
        f"{DEMO_ORGANIZATION_ID}/uploads/{other_organization.user_id}/{uuid.uuid4()}.txt",  # someone else's folder
        f"{other_organization.organization_id}/uploads/{DEMO_USER_ID}/{uuid.uuid4()}.txt",  # another organization
    ]
    for name in refused:
        with pytest.raises(StorageApiError) as raised:
            await bucket.upload(name, b"not allowed")
        assert (raised.value.status, raised.value.code) == ("403", "Unauthorized")
    # No policy lets users overwrite or delete, not even their own uploads: the service role keeps the history.
    with pytest.raises(StorageApiError):
        await bucket.upload(own, b"again", {"upsert": "true"})
    assert await bucket.remove([own]) == []
    assert await service_storage.from_(BUCKET).download(own) == b"mine"


async def test_refused_upload_leaves_no_file(demo_member: AsyncStorageClient,
                                             state_dir) -> None:  # type: ignore[no-untyped-def]
    before = {path for path in (state_dir / "storage").rglob("*") if path.is_file()}
    with pytest.raises(StorageApiError):
        await demo_member.from_(BUCKET).upload(f"{DEMO_ORGANIZATION_ID}/chats/{uuid.uuid4()}", b"x")
    assert {path for path in (state_dir / "storage").rglob("*") if path.is_file()} == before


@pytest.mark.parametrize("name", ["../x", "a//b", "/abs", "a/./b", "a/../../b", "a/\x01b", "a\\b", "x" * 1025])
async def test_bad_object_names_are_refused(service_storage: AsyncStorageClient, api_server: str,
                                            local_keys, name: str) -> None:  # type: ignore[no-untyped-def]
    # storage3 refuses dot segments itself (and httpx would resolve them), so they are sent %-encoded, as a
    # client bent on escaping the bucket would send them.
    headers = {"apikey": local_keys.service_role_key,
               "Authorization": f"Bearer {local_keys.service_role_key}", "content-type": "text/plain"}
    encoded = name.replace(".", "%2E").replace("\\", "%5C").replace("\x01", "%01")
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{api_server}/storage/v1/object/{BUCKET}/{encoded}", content=b"x", headers=headers)
    assert answer.status_code == 400
    assert answer.json()["statusCode"] == "400" and answer.json()["error"] == "InvalidKey"


async def test_dot_segments_encoded_in_the_url_are_refused(api_server: str,
                                                           local_keys) -> None:  # type: ignore[no-untyped-def]
    headers = {"apikey": local_keys.service_role_key,
               "Authorization": f"Bearer {local_keys.service_role_key}"}
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{api_server}/storage/v1/object/{BUCKET}/a/%2E%2E/b", headers=headers)
    assert answer.status_code == 400 and answer.json()["error"] == "InvalidKey"


async def test_expired_forged_and_misused_tokens_are_refused(demo_object: str, api_server: str,
                                                             local_keys) -> None:  # type: ignore[no-untyped-def]
    url = f"{api_server}/storage/v1/object/sign/{BUCKET}/{demo_object}"
    now = int(time.time())
    expired = jwt.encode({"url": f"{BUCKET}/{demo_object}", "iat": now - 120, "exp": now - 60},
                         local_keys.jwt_secret, algorithm="HS256")
    forged = jwt.encode({"url": f"{BUCKET}/{demo_object}", "exp": now + 60},
                        "not the project secret, but long enough for HS256", algorithm="HS256")
    other = jwt.encode({"url": f"{BUCKET}/{DEMO_ORGANIZATION_ID}/other.jpg", "exp": now + 60},
                       local_keys.jwt_secret, algorithm="HS256")
    async with httpx.AsyncClient() as http:
        answers = [await http.get(url, params={"token": token}) for token in (expired, forged, other, "junk")]
        missing = await http.get(url)
    assert [answer.status_code for answer in answers] == [400, 400, 400, 400]
    assert [answer.json()["error"] for answer in answers] == \
        ["InvalidJWT", "InvalidJWT", "InvalidSignature", "InvalidJWT"]
    assert missing.status_code == 400


async def test_a_bad_api_token_is_invalid_jwt(api_server: str, local_keys) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{api_server}/storage/v1/bucket",
                                headers={"apikey": local_keys.anon_key, "Authorization": "Bearer junk"})
    assert answer.status_code == 400 and answer.json()["error"] == "InvalidJWT"


async def test_signed_upload_url_is_made_only_where_the_user_may_upload(demo_member: AsyncStorageClient,
                                                                        service_storage: AsyncStorageClient) -> None:
    bucket = demo_member.from_(BUCKET)
    own = f"{DEMO_ORGANIZATION_ID}/uploads/{DEMO_USER_ID}/{uuid.uuid4()}.png"
    signed = await bucket.create_signed_upload_url(own)
    uploaded = await bucket.upload_to_signed_url(own, signed["token"], b"png", {"content-type": "image/png"})
    assert uploaded.full_path == f"{BUCKET}/{own}"
    info = await service_storage.from_(BUCKET).info(own)
    assert (info["content_type"], info["size"]) == ("image/png", 3)
    with pytest.raises(StorageApiError) as refused:
        await bucket.create_signed_upload_url(f"{DEMO_ORGANIZATION_ID}/chats/{uuid.uuid4()}.png")
    assert refused.value.status == "403"
    # The token names its object: it uploads nothing else, and not twice without upsert.
    with pytest.raises(StorageApiError) as elsewhere:
        await bucket.upload_to_signed_url(f"{own}.other", signed["token"], b"png")
    with pytest.raises(StorageApiError) as again:
        await bucket.upload_to_signed_url(own, signed["token"], b"png")
    assert (elsewhere.value.code, again.value.status) == ("InvalidSignature", "409")
