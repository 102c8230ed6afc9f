"""The admin users API of /auth/v1: the service role only, through supabase-py's `auth.admin`."""

from __future__ import annotations

import uuid

import httpx
import pytest
from supabase_auth.errors import AuthApiError

from supabase_local.keys import LocalKeys, user_token
from tests.conftest import DEMO_USER_ID, ClientFactory


async def test_create_get_update_list_and_delete_a_user(make_supabase_client: ClientFactory,
                                                        local_keys: LocalKeys) -> None:
    admin = (await make_supabase_client(local_keys.service_role_key)).auth.admin
    email = f"admin-made-{uuid.uuid4().hex[:8]}@example.test"

    created = (await admin.create_user({"email": email, "password": "long enough", "email_confirm": True,
                                        "user_metadata": {"name": "Bo"},
                                        "app_metadata": {"plan": "pro"}})).user
    assert created.email == email and created.email_confirmed_at is not None
    assert created.app_metadata == {"provider": "email", "providers": ["email"], "plan": "pro"}

    assert (await admin.get_user_by_id(created.id)).user.user_metadata == {"name": "Bo"}
    updated = (await admin.update_user_by_id(created.id, {"user_metadata": {"name": None, "team": "a"}})).user
    assert updated.user_metadata == {"team": "a"}

    listed = await admin.list_users(page=1, per_page=1000)
    assert email in {user.email for user in listed} and DEMO_USER_ID in {user.id for user in listed}

    signed_in = await make_supabase_client(local_keys.anon_key)
    session = (await signed_in.auth.sign_in_with_password({"email": email, "password": "long enough"})).session
    assert session is not None

    await admin.delete_user(created.id)
    with pytest.raises(AuthApiError) as gone:
        await admin.get_user_by_id(created.id)
    assert (gone.value.status, gone.value.code) == (404, "user_not_found")
    # The deleted user's sessions went with them.
    with pytest.raises(AuthApiError) as ended:
        await signed_in.auth.get_user(session.access_token)
    assert (ended.value.status, ended.value.code) == (403, "session_not_found")
    token_only = user_token(created.id, local_keys.jwt_secret)
    with pytest.raises(AuthApiError) as no_user:
        await signed_in.auth.get_user(token_only)
    assert (no_user.value.status, no_user.value.code) == (403, "user_not_found")


async def test_a_taken_email_is_refused(make_supabase_client: ClientFactory, local_keys: LocalKeys) -> None:
    admin = (await make_supabase_client(local_keys.service_role_key)).auth.admin
    with pytest.raises(AuthApiError) as taken:
        await admin.create_user({"email": "ADMIN@demo.local", "password": "long enough"})
    assert (taken.value.status, taken.value.code) == (422, "email_exists")


async def test_list_users_pages(make_supabase_client: ClientFactory, local_keys: LocalKeys) -> None:
    admin = (await make_supabase_client(local_keys.service_role_key)).auth.admin
    for _ in range(2):
        await admin.create_user({"email": f"page-{uuid.uuid4().hex[:8]}@example.test"})
    first, second = await admin.list_users(page=1, per_page=1), await admin.list_users(page=2, per_page=1)
    assert len(first) == len(second) == 1 and first[0].id != second[0].id


@pytest.mark.parametrize("who", ["anon", "user"])
async def test_the_admin_api_refuses_anyone_but_the_service_role(
        make_supabase_client: ClientFactory, local_keys: LocalKeys, who: str) -> None:
    token = local_keys.anon_key if who == "anon" else user_token(DEMO_USER_ID, local_keys.jwt_secret)
    client = await make_supabase_client(local_keys.anon_key, token)
    for call in (lambda: client.auth.admin.list_users(),
                 lambda: client.auth.admin.create_user({"email": "intruder@example.test"}),
                 lambda: client.auth.admin.delete_user(DEMO_USER_ID)):
        with pytest.raises(AuthApiError) as refused:
            await call()
        assert (refused.value.status, refused.value.code) == (403, "not_admin")


async def test_errors_take_the_original_shape_without_the_api_version_header(
        api_server: str, local_keys: LocalKeys) -> None:
    async with httpx.AsyncClient(base_url=f"{api_server}/auth/v1", headers={"apikey": local_keys.anon_key}) as http:
        legacy = await http.post("/token", params={"grant_type": "password"},
                                 json={"email": "nobody@example.test", "password": "x"})
        versioned = await http.post("/token", params={"grant_type": "password"},
                                    json={"email": "nobody@example.test", "password": "x"},
                                    headers={"X-Supabase-Api-Version": "2024-01-01"})
        bad_field = await http.post("/token", params={"grant_type": "password"}, json={"email": "nobody"})
    assert legacy.json() == {"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"}
    assert versioned.json() == {"code": "invalid_credentials", "message": "Invalid login credentials"}
    assert versioned.headers["x-supabase-api-version"] == "2024-01-01"
    assert bad_field.status_code == 400 and bad_field.json()["error_code"] == "validation_failed"
    assert bad_field.json()["msg"].startswith("email:")
