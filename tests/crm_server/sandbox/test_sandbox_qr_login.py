"""QR login on the sandbox under Telethon's own `qr_login()`: a logged-in client accepts the token
(auth.acceptLoginToken), the waiting client is told (updateLoginToken) and logs in; 2FA, expired and reused tokens."""

from __future__ import annotations

import asyncio

import pytest
from telethon import errors
from telethon.tl import functions, types

from crm_server.sandbox import SandboxWorld, UnknownAccount
from crm_server.sandbox.qr_login import TokenAlreadyAccepted, TokenExpired, TokenInvalid, scan, tokens_of
from tests.crm_server.sandbox.client_steps import log_in
from tests.crm_server.sandbox.conftest import ClientFactory


async def test_a_logged_in_client_accepts_the_token_and_the_waiting_client_logs_in(
    world: SandboxWorld, make_client: ClientFactory
) -> None:
    phone = "+15550100001"
    phone_app = make_client()
    await log_in(phone_app, phone)
    desktop = make_client()
    await desktop.connect()
    qr = await desktop.qr_login()
    assert qr.url.startswith("tg://login?token=")
    waiting = asyncio.ensure_future(qr.wait(timeout=10))
    await asyncio.sleep(0)  # wait() must be listening before the scan, as Telethon documents
    accepted = await phone_app(functions.auth.AcceptLoginTokenRequest(token=qr.token))
    assert isinstance(accepted, types.Authorization)
    user = await waiting
    assert user.phone == "15550100001"
    assert await desktop.is_user_authorized()
    assert (await desktop.get_me()).id == (await phone_app.get_me()).id
    # The token logged in once: accepting it again is refused as Telegram refuses it.
    with pytest.raises((errors.AuthTokenInvalidError, errors.AuthTokenAlreadyAcceptedError)):
        await phone_app(functions.auth.AcceptLoginTokenRequest(token=qr.token))


async def test_an_account_with_2fa_needs_its_password_after_the_scan(
    world: SandboxWorld, make_client: ClientFactory
) -> None:
    phone = "+15550100002"
    world.create_account(phone, password="correct horse")
    desktop = make_client()
    await desktop.connect()
    qr = await desktop.qr_login()
    waiting = asyncio.ensure_future(qr.wait(timeout=10))
    await asyncio.sleep(0)
    scan(world, qr.url, phone)
    with pytest.raises(errors.SessionPasswordNeededError):
        await waiting
    assert not await desktop.is_user_authorized()
    with pytest.raises(errors.PasswordHashInvalidError):
        await desktop.sign_in(password="wrong")
    user = await desktop.sign_in(password="correct horse")
    assert user.phone == "15550100002"


async def test_an_expired_or_replaced_token_cannot_be_scanned(world: SandboxWorld, make_client: ClientFactory) -> None:
    phone = "+15550100003"
    world.create_account(phone)
    desktop = make_client()
    await desktop.connect()
    qr = await desktop.qr_login()
    first_url = qr.url
    await qr.recreate()
    assert qr.url != first_url
    with pytest.raises(TokenExpired):
        scan(world, first_url, phone)  # a new QR code replaces the old one
    tokens_of(world).token_seconds = -1
    await qr.recreate()
    with pytest.raises(TokenExpired):
        scan(world, qr.url, phone)
    with pytest.raises(TokenInvalid):
        scan(world, "tg://login?token=bm90LWEtdG9rZW4", phone)
    with pytest.raises(ValueError):
        scan(world, "https://example.com/?token=abc", phone)


async def test_only_an_account_of_the_world_scans_and_only_once(
    world: SandboxWorld, make_client: ClientFactory
) -> None:
    world.create_account("+15550100004")
    desktop = make_client()
    await desktop.connect()
    qr = await desktop.qr_login()
    with pytest.raises(UnknownAccount):
        scan(world, qr.url, "+15550100999")
    scan(world, qr.url, "+15550100004")
    with pytest.raises(TokenAlreadyAccepted):
        scan(world, qr.url, "+15550100004")


async def test_import_login_token_answers_as_telegram_does(world: SandboxWorld, make_client: ClientFactory) -> None:
    """auth.importLoginToken (what a client calls after a DC migration) with the token: not yet accepted → the token;
    accepted → the login; unknown → AUTH_TOKEN_INVALID."""
    world.create_account("+15550100005")
    desktop = make_client()
    await desktop.connect()
    qr = await desktop.qr_login()
    pending = await desktop(functions.auth.ImportLoginTokenRequest(token=qr.token))
    assert isinstance(pending, types.auth.LoginToken) and pending.token == qr.token
    scan(world, qr.url, "+15550100005")
    done = await desktop(functions.auth.ImportLoginTokenRequest(token=qr.token))
    assert isinstance(done, types.auth.LoginTokenSuccess)
    assert done.authorization.user.phone == "15550100005"
    with pytest.raises(errors.AuthTokenInvalidError):
        await desktop(functions.auth.ImportLoginTokenRequest(token=b"unknown"))
