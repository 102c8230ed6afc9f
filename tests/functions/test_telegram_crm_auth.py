"""telegram-crm-auth's QR steps against a real crm_server on the sandbox: qr shows a code (URL and SVG drawn here),
qr-status follows it to authorized, 2FA continues with the password step, and a wrong or missing loginId is named."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from xml.etree import ElementTree

import httpx

from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.functions.conftest import Organization, connect_account

MakeOrganization = Callable[[], Awaitable[Organization]]


async def auth_step(http: httpx.AsyncClient, organization: Organization, integration_id: str, step: str,
                    **fields: Any) -> httpx.Response:
    return await http.post("/telegram-crm-auth", headers=organization.auth,
                           json={"integrationId": integration_id, "step": step, **fields})


async def poll(http: httpx.AsyncClient, organization: Organization, integration_id: str, login_id: str,
               status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        response = await auth_step(http, organization, integration_id, "qr-status", loginId=login_id)
        assert response.status_code == 200, response.text
        if response.json()["status"] == status or time.monotonic() > deadline:
            assert response.json()["status"] == status, response.json()
            return response.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)


async def test_the_qr_step_shows_a_code_and_qr_status_follows_it_to_logged_in(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    account = await connect_account(http, crm, crm_admin, organization, login=False)
    crm_admin.ok(crm_admin.post("/sandbox/accounts", json={"phone": account.phone}))

    started = await auth_step(http, organization, account.integration_id, "qr")
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["status"] == "qr" and body["phone"] == account.phone
    assert body["url"].startswith("tg://login?token=") and body["expiresAt"].endswith("Z")
    svg = ElementTree.fromstring(body["qrSvg"])  # an image, drawn here: no script, no external reference
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    assert "script" not in body["qrSvg"] and "href" not in body["qrSvg"]

    crm_admin.ok(crm_admin.post("/sandbox/qr-scan", json={"url": body["url"], "phone": account.phone}))
    done = await poll(http, organization, account.integration_id, body["loginId"], "authorized")
    assert done == {"success": True, "status": "authorized", "phone": account.phone, "loginId": body["loginId"]}
    assert crm_admin.wait_account(organization.id, account.phone, "connected")["connected"] is True


async def test_a_scan_by_an_account_with_2fa_continues_with_the_password_step(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    account = await connect_account(http, crm, crm_admin, organization, login=False)
    crm_admin.ok(crm_admin.post("/sandbox/accounts", json={"phone": account.phone, "password": "correct horse"}))
    started = (await auth_step(http, organization, account.integration_id, "qr")).json()
    crm_admin.ok(crm_admin.post("/sandbox/qr-scan", json={"url": started["url"], "phone": account.phone}))
    asked = await poll(http, organization, account.integration_id, started["loginId"], "password_required")
    assert "qrSvg" not in asked and "url" not in asked

    wrong = await auth_step(http, organization, account.integration_id, "password", loginId=started["loginId"],
                            password="wrong")
    assert wrong.status_code == 422 and wrong.json()["code"] == "PASSWORD_INVALID"
    right = await auth_step(http, organization, account.integration_id, "password", loginId=started["loginId"],
                            password="correct horse")
    assert right.status_code == 200 and right.json()["status"] == "authorized"


async def test_qr_status_names_a_missing_or_unknown_login(
        http: httpx.AsyncClient, crm: CrmServerProcess, crm_admin: CrmClient,
        make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    account = await connect_account(http, crm, crm_admin, organization, login=False)
    missing = await auth_step(http, organization, account.integration_id, "qr-status")
    assert missing.status_code == 422 and missing.json()["field"] == "loginId"
    unknown = await auth_step(http, organization, account.integration_id, "qr-status", loginId="A" * 32)
    assert unknown.status_code == 404 and unknown.json()["code"] == "LOGIN_NOT_FOUND"
    malformed = await auth_step(http, organization, account.integration_id, "qr-status", loginId="../x" * 5)
    assert malformed.status_code == 422 and malformed.json()["field"] == "loginId"
