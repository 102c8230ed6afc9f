"""Logging in through Telethon's own code: login code, 2FA with a real SRP check, restart, log out."""

from __future__ import annotations

from pathlib import Path

import pytest
from telethon import errors
from telethon import password as pwd
from telethon.sessions import StringSession
from telethon.tl import functions

from crm_server.sandbox import LOGIN_CODE, SandboxWorld, install, uninstall

from .client_steps import log_in

PHONE = "+79991110001"


async def test_new_client_is_not_authorized_before_sign_in(world, make_client):
    client = make_client()
    await client.connect()

    assert await client.is_user_authorized() is False
    assert await client.get_me() is None  # users.getUsers([self]) answered 401 AUTH_KEY_UNREGISTERED


async def test_wrong_login_code_raises_phone_code_invalid(world, make_client):
    client = make_client()
    await client.connect()
    await client.send_code_request(PHONE)

    with pytest.raises(errors.PhoneCodeInvalidError):
        await client.sign_in(PHONE, "00000")

    assert await client.is_user_authorized() is False


async def test_code_login_makes_the_phone_an_account_and_get_me_returns_it(world, make_client):
    client = make_client()
    await client.connect()
    await client.send_code_request(PHONE)

    signed_in = await client.sign_in(PHONE, LOGIN_CODE)
    me = await client.get_me()

    assert await client.is_user_authorized() is True
    assert me.id == signed_in.id == world.user_id_of(PHONE)
    assert me.phone == PHONE.lstrip("+")
    assert me.is_self
    assert [a.phone for a in world.accounts()] == [PHONE.lstrip("+")]


async def test_two_factor_login_checks_the_password_with_srp(world, make_client):
    world.create_account(PHONE, password="correct horse")
    client = make_client()
    await client.connect()
    await client.send_code_request(PHONE)

    with pytest.raises(errors.SessionPasswordNeededError):
        await client.sign_in(PHONE, LOGIN_CODE)
    with pytest.raises(errors.PasswordHashInvalidError):
        await client.sign_in(password="wrong")
    assert await client.is_user_authorized() is False

    me = await client.sign_in(password="correct horse")

    assert me.id == world.user_id_of(PHONE)
    assert await client.is_user_authorized() is True


async def test_password_check_is_single_use_per_srp_id(world, make_client):
    world.create_account(PHONE, password="pw")
    client = make_client()
    await client.connect()
    await client.send_code_request(PHONE)
    with pytest.raises(errors.SessionPasswordNeededError):
        await client.sign_in(PHONE, LOGIN_CODE)
    challenge = await client(functions.account.GetPasswordRequest())
    check = pwd.compute_check(challenge, "pw")

    await client(functions.auth.CheckPasswordRequest(check))
    with pytest.raises(errors.SrpIdInvalidError):
        await client(functions.auth.CheckPasswordRequest(check))


async def test_restarted_world_from_file_keeps_the_session_authorized(world_path: Path, make_client):
    first = SandboxWorld(world_path)
    install(first)
    try:
        client = make_client()
        await log_in(client, PHONE)
        saved = client.session.save()
        await client.disconnect()
    finally:
        uninstall()
        first.close()

    reopened = SandboxWorld(world_path)
    install(reopened)
    try:
        restarted = make_client(StringSession(saved))
        await restarted.connect()
        me = await restarted.get_me()
        assert me is not None and me.phone == PHONE.lstrip("+")
    finally:
        await restarted.disconnect()
        uninstall()
        reopened.close()


async def test_log_out_unbinds_the_auth_key(world, make_client):
    client = make_client()
    await log_in(client, PHONE)
    saved = client.session.save()

    assert await client.log_out() is True

    again = make_client(StringSession(saved))
    await again.connect()
    assert await again.is_user_authorized() is False


async def test_invalid_phone_is_rejected_at_send_code(world, make_client):
    client = make_client()
    await client.connect()

    with pytest.raises(errors.PhoneNumberInvalidError):
        await client.send_code_request("+12")
