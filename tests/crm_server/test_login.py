"""Logging accounts in through the HTTP routes (code, then 2FA), connect's view of it, and logging out."""

from __future__ import annotations

import subprocess
import sys

from tests.crm_server.conftest import PROJECT_A
from tests.crm_server.server_process import CrmClient, CrmServerProcess, hermetic_env, new_phone

WEBHOOK = "https://93.184.216.34/crm-webhook"


def connect(client: CrmClient, phone: str, **extra: object) -> dict:
    return client.ok(
        client.post(
            "/integration/lovable/connect",
            json={"project_id": PROJECT_A, "phone": phone, "webhook_url": WEBHOOK, **extra},
        )
    )


def test_connect_says_auth_required_before_login_and_connected_after(admin: CrmClient) -> None:
    phone = new_phone()
    before = connect(admin, phone, secret="a-shared-secret-1")
    assert before["status"] == "auth_required"
    assert before["account"] == {"authorized": False, "user_id": None, "username": None}
    assert before["project_id"] == PROJECT_A and before["phone"] == phone and before["webhook_url"] == WEBHOOK

    admin.login(PROJECT_A, phone)

    after = connect(admin, phone, secret="a-shared-secret-1")
    assert after["status"] == "connected"
    assert after["account"]["authorized"] is True
    assert isinstance(after["account"]["user_id"], int)


def test_connect_without_secret_generates_one_once_and_keeps_it(admin: CrmClient) -> None:
    phone = new_phone()
    first = connect(admin, phone)
    assert len(first["secret"]) >= 32
    again = connect(admin, phone, webhook_url="https://93.184.216.34/other")
    assert "secret" not in again
    assert again["webhook_url"] == "https://93.184.216.34/other"
    webhook = admin.account(PROJECT_A, phone)["webhook"]
    assert webhook["url"] == "https://93.184.216.34/other"
    assert webhook["pending"] == 0 and webhook["failed"] == 0


def test_login_rejects_a_wrong_code_with_422_then_accepts_the_right_one(admin: CrmClient) -> None:
    phone = new_phone()
    sent = admin.ok(admin.post("/telegram/auth/send-code", json={"project_id": PROJECT_A, "phone": phone}))
    # The phone code hash stays on the server: the answer carries nothing but status and timeout.
    assert set(sent) == {"status", "timeout"} and sent["status"] == "code_sent"

    wrong = admin.post("/telegram/auth/sign-in", json={"project_id": PROJECT_A, "phone": phone, "code": "98765"})
    assert wrong.status_code == 422
    assert wrong.json() == {
        "success": False,
        "error": wrong.json()["error"],
        "code": "INVALID_CODE",
        "field": "code",
    }

    right = admin.post("/telegram/auth/sign-in", json={"project_id": PROJECT_A, "phone": phone, "code": "12345"})
    assert right.json() == {"status": "authorized"}
    account = admin.account(PROJECT_A, phone)
    assert account["authorized"] is True and account["connected"] is True


def test_login_with_2fa_rejects_a_wrong_password_with_422_then_authorizes(admin: CrmClient) -> None:
    phone = new_phone()
    admin.ok(admin.post("/sandbox/accounts", json={"phone": phone, "password": "correct horse"}))
    admin.ok(admin.post("/telegram/auth/send-code", json={"project_id": PROJECT_A, "phone": phone}))
    signed = admin.ok(
        admin.post("/telegram/auth/sign-in", json={"project_id": PROJECT_A, "phone": phone, "code": "12345"})
    )
    assert signed == {"status": "password_required"}
    assert admin.account(PROJECT_A, phone)["authorized"] is False

    wrong = admin.post(
        "/telegram/auth/password", json={"project_id": PROJECT_A, "phone": phone, "password": "battery staple"}
    )
    assert wrong.status_code == 422
    assert wrong.json()["code"] == "PASSWORD_INVALID" and wrong.json()["field"] == "password"

    right = admin.post(
        "/telegram/auth/password", json={"project_id": PROJECT_A, "phone": phone, "password": "correct horse"}
    )
    assert right.json() == {"status": "authorized"}
    assert admin.account(PROJECT_A, phone)["connected"] is True


def test_sign_in_before_send_code_is_409_login_not_started(admin: CrmClient) -> None:
    response = admin.post(
        "/telegram/auth/sign-in", json={"project_id": PROJECT_A, "phone": new_phone(), "code": "12345"}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "LOGIN_NOT_STARTED"


def test_password_before_the_code_is_409_login_not_started(admin: CrmClient) -> None:
    phone = new_phone()
    admin.ok(admin.post("/sandbox/accounts", json={"phone": phone, "password": "pw-before-code"}))
    admin.ok(admin.post("/telegram/auth/send-code", json={"project_id": PROJECT_A, "phone": phone}))
    response = admin.post(
        "/telegram/auth/password", json={"project_id": PROJECT_A, "phone": phone, "password": "pw-before-code"}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "LOGIN_NOT_STARTED"


def test_logout_forgets_the_account_and_later_sends_are_404(admin: CrmClient) -> None:
    phone = new_phone()
    connect(admin, phone, secret="logout-secret-123")
    admin.login(PROJECT_A, phone)
    response = admin.delete(f"/telegram/accounts/{phone}", params={"project_id": PROJECT_A})
    assert response.json() == {"status": "logged_out"}
    accounts = admin.ok(admin.get("/telegram/status", params={"project_id": PROJECT_A, "phone": phone}))["accounts"]
    assert accounts == []
    admin.user(user_phone := new_phone(), username=f"u{user_phone[1:]}")
    send = admin.send(PROJECT_A, phone, f"@u{user_phone[1:]}", "after logout")
    assert send.status_code == 404 and send.json()["code"] == "ACCOUNT_NOT_FOUND"
    assert admin.delete(f"/telegram/accounts/{phone}", params={"project_id": PROJECT_A}).status_code == 404


def test_cli_login_against_the_sandbox_is_picked_up_by_the_running_server(
    crm_server: CrmServerProcess, admin: CrmClient
) -> None:
    phone = new_phone()
    login = subprocess.run(
        [
            sys.executable, "-m", "crm_server", "login", "--sandbox",
            "--project", PROJECT_A, "--phone", phone, "--state-dir", str(crm_server.state_dir),
        ],
        input="11111\n12345\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=hermetic_env(),
        cwd=crm_server.state_dir,
    )
    assert login.returncode == 0, login.stdout + login.stderr
    assert "wrong" in login.stdout  # the first, wrong code was refused and asked again
    user_phone = new_phone()
    admin.user(user_phone, username=f"cli{user_phone[1:]}")
    response = admin.send(PROJECT_A, phone, f"@cli{user_phone[1:]}", "hello from a CLI login")
    assert response.status_code == 200, response.text
    assert [m["text"] for m in admin.sent(phone)] == ["hello from a CLI login"]
