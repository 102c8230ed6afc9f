"""/auth/v1 through supabase-py's own auth client, as an app signs its users in against hosted Supabase."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import jwt
import pytest
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from supabase_local.database import DatabaseUrls
from supabase_local.keys import LocalKeys
from tests.conftest import DEMO_ORGANIZATION_ID, DEMO_USER_ID, ClientFactory, create_organization_member

PASSWORD = "correct horse battery"


async def new_user(make_supabase_client: ClientFactory, local_keys: LocalKeys, **attributes: object) -> str:
    """A confirmed user with PASSWORD, created through the admin API; returns the email."""
    admin = await make_supabase_client(local_keys.service_role_key)
    email = f"user-{uuid.uuid4().hex[:12]}@example.test"
    await admin.auth.admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True,
                                        **attributes})  # type: ignore[typeddict-item]
    return email


async def test_sign_in_with_password_gives_a_session_with_gotrues_claims(
        make_supabase_client: ClientFactory, local_keys: LocalKeys, api_server: str) -> None:
    email = await new_user(make_supabase_client, local_keys, user_metadata={"full_name": "Ann"})
    client = await make_supabase_client(local_keys.anon_key)

    answer = await client.auth.sign_in_with_password({"email": email, "password": PASSWORD})

    assert answer.session is not None and answer.user is not None
    assert answer.user.email == email and answer.user.user_metadata == {"full_name": "Ann"}
    assert answer.session.refresh_token and answer.session.token_type == "bearer"
    claims = jwt.decode(answer.session.access_token, local_keys.jwt_secret, algorithms=["HS256"],
                        audience="authenticated")
    assert claims["sub"] == answer.user.id and claims["role"] == "authenticated" and claims["email"] == email
    assert claims["iss"] == f"{api_server}/auth/v1" and claims["aal"] == "aal1" and claims["is_anonymous"] is False
    assert claims["amr"][0]["method"] == "password" and claims["app_metadata"]["provider"] == "email"
    assert uuid.UUID(claims["session_id"]) and claims["exp"] - claims["iat"] == 3600


async def test_a_wrong_password_is_refused_as_invalid_credentials(
        make_supabase_client: ClientFactory, local_keys: LocalKeys) -> None:
    email = await new_user(make_supabase_client, local_keys)
    client = await make_supabase_client(local_keys.anon_key)

    with pytest.raises(AuthApiError) as wrong:
        await client.auth.sign_in_with_password({"email": email, "password": "not it"})
    with pytest.raises(AuthApiError) as unknown:
        await client.auth.sign_in_with_password({"email": "nobody@example.test", "password": PASSWORD})

    for refused in (wrong.value, unknown.value):
        assert (refused.status, refused.code, refused.message) == (400, "invalid_credentials",
                                                                     "Invalid login credentials")


async def test_an_unconfirmed_email_cannot_sign_in(make_supabase_client: ClientFactory,
                                                   local_keys: LocalKeys) -> None:
    admin = await make_supabase_client(local_keys.service_role_key)
    email = f"unconfirmed-{uuid.uuid4().hex[:8]}@example.test"
    await admin.auth.admin.create_user({"email": email, "password": PASSWORD})
    client = await make_supabase_client(local_keys.anon_key)

    with pytest.raises(AuthApiError) as refused:
        await client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert (refused.value.status, refused.value.code) == (400, "email_not_confirmed")


async def test_refresh_rotates_the_token_and_a_used_one_is_refused_and_ends_the_session(
        make_supabase_client: ClientFactory, local_keys: LocalKeys) -> None:
    email = await new_user(make_supabase_client, local_keys)
    client = await make_supabase_client(local_keys.anon_key)
    first = (await client.auth.sign_in_with_password({"email": email, "password": PASSWORD})).session
    assert first is not None

    second = (await client.auth.refresh_session(first.refresh_token)).session
    assert second is not None and second.refresh_token != first.refresh_token
    assert jwt.decode(second.access_token, options={"verify_signature": False})["session_id"] == \
        jwt.decode(first.access_token, options={"verify_signature": False})["session_id"]

    other = await make_supabase_client(local_keys.anon_key)
    with pytest.raises(AuthApiError) as reused:
        await other.auth.refresh_session(first.refresh_token)
    assert (reused.value.status, reused.value.code) == (400, "refresh_token_already_used")
    # The reuse ended the session: the token the rightful holder got is dead too.
    with pytest.raises(AuthApiError) as ended:
        await other.auth.refresh_session(second.refresh_token)
    assert ended.value.code == "refresh_token_already_used" or ended.value.code == "refresh_token_not_found"


async def test_an_unknown_refresh_token_is_refused(make_supabase_client: ClientFactory,
                                                   local_keys: LocalKeys) -> None:
    client = await make_supabase_client(local_keys.anon_key)
    with pytest.raises(AuthApiError) as refused:
        await client.auth.refresh_session("never-issued")
    assert (refused.value.status, refused.value.code) == (400, "refresh_token_not_found")


async def test_get_user_and_update_user_act_on_the_signed_in_user(make_supabase_client: ClientFactory,
                                                                  local_keys: LocalKeys) -> None:
    email = await new_user(make_supabase_client, local_keys)
    client = await make_supabase_client(local_keys.anon_key)
    session = (await client.auth.sign_in_with_password({"email": email, "password": PASSWORD})).session
    assert session is not None

    got = await client.auth.get_user(session.access_token)
    assert got is not None and got.user.email == email and got.user.last_sign_in_at is not None

    updated = await client.auth.update_user({"data": {"locale": "ru"}, "password": "another good one"})
    assert updated.user.user_metadata == {"locale": "ru"}
    fresh = await make_supabase_client(local_keys.anon_key)
    assert (await fresh.auth.sign_in_with_password({"email": email, "password": "another good one"})).session


async def test_sign_out_ends_the_session_for_the_auth_api(make_supabase_client: ClientFactory,
                                                          local_keys: LocalKeys) -> None:
    email = await new_user(make_supabase_client, local_keys)
    client = await make_supabase_client(local_keys.anon_key)
    session = (await client.auth.sign_in_with_password({"email": email, "password": PASSWORD})).session
    assert session is not None

    await client.auth.sign_out()

    assert await client.auth.get_session() is None
    other = await make_supabase_client(local_keys.anon_key)
    with pytest.raises(AuthApiError) as gone:
        await other.auth.get_user(session.access_token)
    assert (gone.value.status, gone.value.code) == (403, "session_not_found")
    with pytest.raises(AuthApiError):
        await other.auth.refresh_session(session.refresh_token)


async def test_local_sign_out_keeps_the_users_other_sessions(make_supabase_client: ClientFactory,
                                                             local_keys: LocalKeys) -> None:
    email = await new_user(make_supabase_client, local_keys)
    laptop, phone = [await make_supabase_client(local_keys.anon_key) for _ in range(2)]
    await laptop.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    kept = (await phone.auth.sign_in_with_password({"email": email, "password": PASSWORD})).session
    assert kept is not None

    await laptop.auth.sign_out({"scope": "local"})

    assert (await phone.auth.get_user(kept.access_token)) is not None


async def test_the_signed_in_users_token_works_for_rest_under_rls(
        make_supabase_client: ClientFactory, local_keys: LocalKeys, database_urls, api_server: str) -> None:
    member = await create_organization_member(database_urls.admin, "Auth RLS Organization")
    admin = await make_supabase_client(local_keys.service_role_key)
    await admin.auth.admin.update_user_by_id(member.user_id, {"password": PASSWORD, "email_confirm": True})
    client = await make_supabase_client(local_keys.anon_key)
    session = (await client.auth.sign_in_with_password({"email": f"{member.user_id}@example.test",
                                                        "password": PASSWORD})).session
    assert session is not None

    # No extra step: supabase-py hands the session's token to its REST client on sign-in, as against hosted Supabase.
    clients = (await client.table("clients").select("id, organization_id").execute()).data

    assert [row["id"] for row in clients] == [member.client_id]
    assert all(row["organization_id"] != DEMO_ORGANIZATION_ID for row in clients)


async def test_weak_passwords_are_refused_with_reasons(make_supabase_client: ClientFactory,
                                                       local_keys: LocalKeys) -> None:
    admin = await make_supabase_client(local_keys.service_role_key)
    with pytest.raises(AuthWeakPasswordError) as weak:
        await admin.auth.admin.create_user({"email": "weak@example.test", "password": "123"})
    assert weak.value.status == 422 and weak.value.reasons == ["length"]


async def test_sign_up_is_refused_while_disabled(make_supabase_client: ClientFactory, local_keys: LocalKeys) -> None:
    client = await make_supabase_client(local_keys.anon_key)
    with pytest.raises(AuthApiError) as refused:
        await client.auth.sign_up({"email": "new@example.test", "password": PASSWORD})
    assert (refused.value.status, refused.value.code) == (422, "signup_disabled")


async def test_settings_and_health_answer(api_server: str, local_keys: LocalKeys) -> None:
    async with httpx.AsyncClient(base_url=f"{api_server}/auth/v1", headers={"apikey": local_keys.anon_key}) as http:
        settings = (await http.get("/settings")).json()
        health = await http.get("/health")
    assert settings["disable_signup"] is True and settings["external"]["email"] is True
    assert health.status_code == 200 and health.json()["name"] == "GoTrue"


async def test_two_refreshes_with_one_token_cannot_both_succeed(make_supabase_client: ClientFactory,
                                                               local_keys: LocalKeys, api_server: str) -> None:
    email = await new_user(make_supabase_client, local_keys)
    client = await make_supabase_client(local_keys.anon_key)
    session = (await client.auth.sign_in_with_password({"email": email, "password": PASSWORD})).session
    assert session is not None

    async with httpx.AsyncClient(base_url=f"{api_server}/auth/v1", headers={"apikey": local_keys.anon_key}) as http:
        answers = await asyncio.gather(*(http.post("/token", params={"grant_type": "refresh_token"},
                                                   json={"refresh_token": session.refresh_token})
                                         for _ in range(4)))

    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 400, 400, 400], [answer.text for answer in answers]


async def test_an_expired_access_token_is_refused_by_get_user(make_supabase_client: ClientFactory,
                                                              local_keys: LocalKeys) -> None:
    expired = jwt.encode({"sub": DEMO_USER_ID, "role": "authenticated", "aud": "authenticated", "exp": 1},
                         local_keys.jwt_secret, algorithm="HS256")
    client = await make_supabase_client(local_keys.anon_key)
    with pytest.raises(AuthApiError) as refused:
        await client.auth.get_user(expired)
    assert (refused.value.status, refused.value.code) == (403, "bad_jwt")


async def test_passwords_and_refresh_tokens_are_stored_only_as_hashes(
        make_supabase_client: ClientFactory, local_keys: LocalKeys, database_urls: DatabaseUrls) -> None:
    email = await new_user(make_supabase_client, local_keys)
    client = await make_supabase_client(local_keys.anon_key)
    session = (await client.auth.sign_in_with_password({"email": email, "password": PASSWORD})).session
    assert session is not None
    conn = await asyncpg.connect(database_urls.admin)
    try:
        stored = await conn.fetchval("SELECT encrypted_password FROM auth.users WHERE email = $1", email)
        tokens = await conn.fetch("SELECT token FROM auth.refresh_tokens WHERE user_id = $1", session.user.id)
    finally:
        await conn.close()
    assert stored.startswith("$2b$10$") and PASSWORD not in stored
    assert tokens and all(row["token"] != session.refresh_token for row in tokens)
    assert "encrypted_password" not in session.user.model_dump()


async def test_the_auth_service_cannot_read_the_crm_tables(database_urls: DatabaseUrls) -> None:
    conn = await asyncpg.connect(database_urls.auth_admin)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT id FROM public.clients LIMIT 1")
    finally:
        await conn.close()
