"""QR login through crm_server's routes on the sandbox (Telethon's real `qr_login()` under them): without and with 2FA,
without a phone (the scanner's becomes the account's), another account scanning, other projects, refresh and expiry."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.crm_server.conftest import PROJECT_A, PROJECT_B
from tests.crm_server.server_process import CrmClient, CrmServerProcess, new_phone

POLL_TIMEOUT = 20.0


def start_qr(client: CrmClient, project_id: str = PROJECT_A, phone: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"project_id": project_id}
    if phone is not None:
        body["phone"] = phone
    return client.ok(client.post("/telegram/auth/qr", json=body))  # type: ignore[no-any-return]


def qr_status(client: CrmClient, login_id: str, project_id: str = PROJECT_A) -> dict[str, Any]:
    return client.ok(  # type: ignore[no-any-return]
        client.get("/telegram/auth/qr", params={"project_id": project_id, "login_id": login_id})
    )


def wait_status(client: CrmClient, login_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + POLL_TIMEOUT
    while True:
        answer = qr_status(client, login_id)
        if answer["status"] == status or time.monotonic() > deadline:
            assert answer["status"] == status, answer
            return answer
        time.sleep(0.05)


def scan(admin: CrmClient, url: str, phone: str, **extra: Any) -> Any:
    return admin.post("/sandbox/qr-scan", json={"url": url, "phone": phone, **extra})


def test_a_qr_login_without_a_phone_logs_in_the_account_that_scans_it(admin: CrmClient) -> None:
    phone = new_phone()
    admin.ok(admin.post("/sandbox/accounts", json={"phone": phone}))
    started = start_qr(admin)
    assert set(started) == {"login_id", "status", "url", "expires_at"}
    assert started["status"] == "qr" and started["url"].startswith("tg://login?token=")
    assert started["expires_at"].endswith("Z")
    waiting = qr_status(admin, started["login_id"])
    assert waiting == {"status": "qr", "url": started["url"], "expires_at": started["expires_at"]}

    assert admin.ok(scan(admin, started["url"], phone))["status"] == "accepted"

    done = wait_status(admin, started["login_id"], "authorized")
    assert done == {"status": "authorized", "phone": phone}
    account = admin.wait_account(PROJECT_A, phone, "connected")
    assert account["authorized"] is True and account["connected"] is True
    # The account is an ordinary one from now on: it sends.
    admin.user(peer := new_phone())
    admin.ok(admin.send(PROJECT_A, phone, peer, "hello after a QR login"))
    assert [m["text"] for m in admin.sent(phone)] == ["hello after a QR login"]


def test_a_qr_login_with_2fa_continues_with_the_password_step(admin: CrmClient) -> None:
    phone = new_phone()
    admin.ok(admin.post("/sandbox/accounts", json={"phone": phone, "password": "correct horse"}))
    started = start_qr(admin, phone=phone)
    admin.ok(scan(admin, started["url"], phone))
    asked = wait_status(admin, started["login_id"], "password_required")
    assert asked == {"status": "password_required", "phone": phone}
    assert admin.account(PROJECT_A, phone)["authorized"] is False

    body = {"project_id": PROJECT_A, "login_id": started["login_id"], "password": "wrong horse"}
    wrong = admin.post("/telegram/auth/password", json=body)
    assert wrong.status_code == 422 and wrong.json()["code"] == "PASSWORD_INVALID"
    assert qr_status(admin, started["login_id"])["status"] == "password_required"

    right = admin.post("/telegram/auth/password", json={**body, "password": "correct horse"})
    assert right.json() == {"status": "authorized"}
    assert qr_status(admin, started["login_id"]) == {"status": "authorized", "phone": phone}
    assert admin.wait_account(PROJECT_A, phone, "connected")["connected"] is True


def test_another_account_scanning_a_qr_login_for_a_phone_is_refused(admin: CrmClient) -> None:
    phone, other = new_phone(), new_phone()
    for account in (phone, other):
        admin.ok(admin.post("/sandbox/accounts", json={"phone": account}))
    started = start_qr(admin, phone=phone)
    admin.ok(scan(admin, started["url"], other))
    ended = wait_status(admin, started["login_id"], "expired")
    assert ended["error"]["code"] == "INVALID_PHONE" and ended["error"]["field"] == "phone"
    assert admin.account(PROJECT_A, phone)["authorized"] is False
    assert admin.get("/telegram/status", params={"project_id": PROJECT_A, "phone": other}).json()["accounts"] == []


def test_another_projects_account_scanning_a_phoneless_qr_login_is_refused_and_logged_out(
        admin: CrmClient) -> None:
    phone = new_phone()
    admin.login(PROJECT_B, phone)
    started = start_qr(admin, PROJECT_A)
    log_outs = admin.ok(admin.get("/sandbox/requests"))["counts"].get("LogOutRequest", 0)
    admin.ok(scan(admin, started["url"], phone))
    ended = wait_status(admin, started["login_id"], "expired")
    assert ended["error"]["code"] == "ACCOUNT_HELD_BY_ANOTHER_PROJECT"
    # The session the scan made belongs to no account here: it was logged out of Telegram again.
    deadline = time.monotonic() + POLL_TIMEOUT
    while admin.ok(admin.get("/sandbox/requests"))["counts"].get("LogOutRequest", 0) == log_outs:
        assert time.monotonic() < deadline, "the orphaned session was never logged out"
        time.sleep(0.05)
    assert admin.get("/telegram/status", params={"project_id": PROJECT_A, "phone": phone}).json()["accounts"] == []
    assert admin.account(PROJECT_B, phone)["connected"] is True


def test_a_qr_login_belongs_to_its_project(admin: CrmClient, client_a: CrmClient, project_keys: dict[str, str],
                                           crm_server: CrmServerProcess) -> None:
    client_b = crm_server.client(project_keys[PROJECT_B])
    try:
        started = start_qr(client_b, PROJECT_B)
        assert qr_status(client_b, started["login_id"], PROJECT_B)["status"] == "qr"
        # Project A's key: another project's login is as unknown as one that never was.
        unknown = client_a.get("/telegram/auth/qr", params={"project_id": PROJECT_A, "login_id": started["login_id"]})
        assert unknown.status_code == 404 and unknown.json()["code"] == "LOGIN_NOT_FOUND"
        forbidden = client_a.get("/telegram/auth/qr", params={"project_id": PROJECT_B, "login_id": started["login_id"]})
        assert forbidden.status_code == 403
        password = client_a.post("/telegram/auth/password",
                                 json={"project_id": PROJECT_A, "login_id": started["login_id"], "password": "x"})
        assert password.status_code == 404 and password.json()["field"] == "login_id"
    finally:
        client_b.close()


def test_qr_routes_name_the_field_they_refuse(admin: CrmClient) -> None:
    bad_phone = admin.post("/telegram/auth/qr", json={"project_id": PROJECT_A, "phone": "12"})
    assert bad_phone.status_code == 422 and bad_phone.json()["field"] == "phone"
    bad_id = admin.get("/telegram/auth/qr", params={"project_id": PROJECT_A, "login_id": "../../etc"})
    assert bad_id.status_code == 422 and bad_id.json()["field"] == "login_id"
    neither = admin.post("/telegram/auth/password", json={"project_id": PROJECT_A, "password": "x"})
    assert neither.status_code == 422 and neither.json()["field"] == "phone"
    not_a_qr = scan(admin, "https://example.com/login", new_phone())
    assert not_a_qr.status_code == 422 and not_a_qr.json()["field"] == "url"
    started = start_qr(admin)
    unknown_phone = scan(admin, started["url"], new_phone())
    assert unknown_phone.status_code == 404 and unknown_phone.json()["field"] == "phone"


# --- a token that lives 3 s, a login 10 s and a lease 2 s: refresh, expiry and a crash without long waits ---------


@pytest.fixture(scope="module")
def short_server() -> Iterator[CrmServerProcess]:
    # A short lease too: after a crash the restarted server takes the accounts over within seconds.
    env = {"CRM_SANDBOX_QR_TOKEN_SECONDS": "3", "CRM_LOGIN_TTL_SECONDS": "10", "CRM_LEASE_TTL_SECONDS": "2"}
    with tempfile.TemporaryDirectory(prefix="crm-qr-") as directory:
        server = CrmServerProcess(Path(directory), env=env, name="qr-short").start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def short_tokens(short_server: CrmServerProcess) -> Iterator[CrmClient]:
    assert short_server.admin_key is not None
    client = short_server.client(short_server.admin_key)
    yield client
    client.close()


def test_the_token_is_refreshed_while_nobody_scans_and_the_old_one_is_expired(short_tokens: CrmClient) -> None:
    admin = short_tokens
    phone = new_phone()
    admin.ok(admin.post("/sandbox/accounts", json={"phone": phone}))
    started = start_qr(admin)
    deadline = time.monotonic() + POLL_TIMEOUT
    while (current := qr_status(admin, started["login_id"]))["url"] == started["url"]:
        assert time.monotonic() < deadline, "the QR code was never refreshed"
        time.sleep(0.05)
    assert current["status"] == "qr" and current["expires_at"] > started["expires_at"]

    stale = scan(admin, started["url"], phone)
    assert stale.status_code == 422 and stale.json()["code"] == "AUTH_TOKEN_EXPIRED"
    admin.ok(scan(admin, current["url"], phone))
    assert wait_status(admin, started["login_id"], "authorized")["phone"] == phone
    assert admin.wait_account(PROJECT_A, phone, "connected")["connected"] is True


def test_a_scan_whose_update_was_lost_is_learned_at_the_next_refresh(short_tokens: CrmClient) -> None:
    """Telegram answers the refresh's export with the login itself (auth.loginTokenSuccess) when the
    updateLoginToken push never arrived: the login completes from that answer."""
    admin = short_tokens
    phone = new_phone()
    admin.ok(admin.post("/sandbox/accounts", json={"phone": phone}))
    started = start_qr(admin)
    admin.ok(scan(admin, started["url"], phone, push=False))
    assert wait_status(admin, started["login_id"], "authorized")["phone"] == phone
    assert admin.wait_account(PROJECT_A, phone, "connected")["connected"] is True


def test_a_qr_login_nobody_scans_expires(short_tokens: CrmClient) -> None:
    admin = short_tokens
    started = start_qr(admin)
    ended = wait_status(admin, started["login_id"], "expired")
    assert "url" not in ended and "error" not in ended


def test_an_account_logged_in_by_qr_code_survives_a_crash_and_no_token_reaches_the_log(
        short_server: CrmServerProcess, short_tokens: CrmClient) -> None:
    admin = short_tokens
    phone = new_phone()
    admin.ok(admin.post("/sandbox/accounts", json={"phone": phone}))
    started = start_qr(admin)
    admin.ok(scan(admin, started["url"], phone))
    wait_status(admin, started["login_id"], "authorized")
    admin.wait_account(PROJECT_A, phone, "connected")

    short_server.kill()  # nothing flushed at exit: the session must have been stored when the login completed
    short_server.start()
    assert admin.wait_account(PROJECT_A, phone, "connected")["connected"] is True
    admin.user(peer := new_phone())
    admin.ok(admin.send(PROJECT_A, phone, peer, "after a crash"))
    token = started["url"].split("=", 1)[1]
    log = short_server.log_text()
    assert token not in log and started["login_id"] not in log
