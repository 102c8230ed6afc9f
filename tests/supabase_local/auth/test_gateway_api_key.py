"""Supabase's gateway rule on the local stack: /rest/v1, /auth/v1 and /storage/v1 answer only with the project's
`apikey`; Storage's capability URLs (public objects, signed URLs) open without it, as hosted."""

from __future__ import annotations

import uuid

import httpx
import pytest
from supabase import AsyncClient

from supabase_local.gateway import INVALID_KEY, MISSING_KEY
from supabase_local.keys import LocalKeys, api_key, user_token
from tests.conftest import DEMO_ORGANIZATION_ID, DEMO_USER_ID

PATHS = ["/rest/v1/clients?select=id", "/auth/v1/settings", "/auth/v1/admin/users", "/storage/v1/bucket",
         "/storage/v1/object/authenticated/chat-media/x.jpg"]


@pytest.mark.parametrize("path", PATHS)
async def test_a_request_without_apikey_is_refused_with_the_gateways_message(
        api_server: str, local_keys: LocalKeys, path: str) -> None:
    async with httpx.AsyncClient(base_url=api_server) as http:
        # Even a valid service token in Authorization does not stand in for the key.
        bare = await http.get(path, headers={"Authorization": f"Bearer {local_keys.service_role_key}"})
    assert (bare.status_code, bare.json()) == (401, MISSING_KEY)


@pytest.mark.parametrize("path", PATHS)
async def test_a_wrong_apikey_is_refused(api_server: str, local_keys: LocalKeys, path: str) -> None:
    forged = api_key("service_role", "another project's secret, long enough for HS256")
    async with httpx.AsyncClient(base_url=api_server) as http:
        answers = [await http.get(path, headers={"apikey": key}) for key in
                   (forged, user_token(DEMO_USER_ID, local_keys.jwt_secret), "nonsense")]
    assert [(answer.status_code, answer.json()) for answer in answers] == [(401, INVALID_KEY)] * 3


@pytest.mark.parametrize("role", ["anon", "service_role"])
async def test_the_projects_keys_pass_in_the_header_or_the_query(api_server: str, local_keys: LocalKeys,
                                                                role: str) -> None:
    key = local_keys.anon_key if role == "anon" else local_keys.service_role_key
    async with httpx.AsyncClient(base_url=api_server) as http:
        header = await http.get("/rest/v1/clients?select=id", headers={"apikey": key})
        query = await http.get("/auth/v1/settings", params={"apikey": key})
    # Past the gateway, the service decides: anon may not read clients (42501 from PostgreSQL), service_role may.
    assert header.json() not in (MISSING_KEY, INVALID_KEY) and query.status_code == 200
    assert header.status_code == (200 if role == "service_role" else 401)


async def test_cors_preflight_and_health_need_no_key(api_server: str) -> None:
    async with httpx.AsyncClient(base_url=api_server) as http:
        preflight = await http.options("/auth/v1/token", headers={
            "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "apikey, content-type"})
        health = await http.get("/health")
    assert preflight.status_code == 200 and health.status_code == 200


async def test_a_signed_url_opens_without_the_key_but_signing_needs_it(api_server: str, local_keys: LocalKeys,
                                                                      service_client: AsyncClient) -> None:
    name = f"{DEMO_ORGANIZATION_ID}/gateway/{uuid.uuid4()}.txt"
    bucket = service_client.storage.from_("chat-media")
    await bucket.upload(name, b"capability", {"content-type": "text/plain"})
    signed = await bucket.create_signed_url(name, 60)
    async with httpx.AsyncClient() as http:
        # What crm_server does with a chat-media URL: a plain GET, no headers.
        opened = await http.get(signed["signedURL"])
        signing = await http.post(f"{api_server}/storage/v1/object/sign/chat-media/{name}", json={"expiresIn": 60},
                                  headers={"Authorization": f"Bearer {local_keys.service_role_key}"})
    assert (opened.status_code, opened.content) == (200, b"capability")
    assert (signing.status_code, signing.json()) == (401, MISSING_KEY)
    await bucket.remove([name])
