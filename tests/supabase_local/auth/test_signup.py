"""`POST /auth/v1/signup` on a project that enables it (`[auth] enable_signup = true`): a new user is signed in at
once, as with the Supabase CLI's default of no email confirmation."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from supabase import AsyncClient, acreate_client
from supabase_auth.errors import AuthApiError

from supabase_local.database import DatabaseUrls
from supabase_local.keys import LocalKeys
from tests.helpers.net import free_port, wait_http


@pytest.fixture(scope="module")
def signup_server(database_urls: DatabaseUrls, local_keys: LocalKeys) -> Iterator[str]:
    from dataclasses import replace

    from supabase_local.api import create_api_app
    from supabase_local.auth.app import create_auth_app
    from supabase_local.auth.config import auth_config
    from supabase_local.rest.app import create_rest_app

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    config = replace(auth_config(local_keys.jwt_secret, base_url), signup_enabled=True)
    app = create_api_app(create_rest_app(database_urls.authenticator, local_keys.jwt_secret),
                         api_keys=(local_keys.anon_key, local_keys.service_role_key),
                         auth_app=create_auth_app(config, database_urls.auth_admin))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="signup-api", daemon=True)
    thread.start()
    try:
        wait_http(f"{base_url}/health", expect_status=200)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
async def client(signup_server: str, local_keys: LocalKeys) -> AsyncIterator[AsyncClient]:
    made = await acreate_client(signup_server, local_keys.anon_key)
    yield made
    await made.postgrest.aclose()


async def test_sign_up_makes_a_confirmed_user_and_signs_them_in(client: AsyncClient) -> None:
    email = f"New-{uuid.uuid4().hex[:8]}@Example.test"
    answer = await client.auth.sign_up({"email": email, "password": "a fine password",
                                        "options": {"data": {"full_name": "Newcomer"}}})
    assert answer.session is not None and answer.user is not None
    assert answer.user.email == email.lower() and answer.user.user_metadata == {"full_name": "Newcomer"}
    assert answer.user.email_confirmed_at is not None
    assert (await client.auth.get_user()).user.id == answer.user.id  # type: ignore[union-attr]


async def test_sign_up_with_a_registered_email_is_refused(client: AsyncClient) -> None:
    with pytest.raises(AuthApiError) as refused:
        await client.auth.sign_up({"email": "admin@demo.local", "password": "a fine password"})
    assert (refused.value.status, refused.value.code) == (422, "user_already_exists")


async def test_settings_say_sign_up_is_open(client: AsyncClient, signup_server: str, local_keys: LocalKeys) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        settings = (await http.get(f"{signup_server}/auth/v1/settings", headers={"apikey": local_keys.anon_key}))
    assert settings.json()["disable_signup"] is False
