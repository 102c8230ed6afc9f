"""Who may call what (X-API-Key, project binding, admin-only sandbox), and what never appears in clear."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Callable

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.crm_server.conftest import PROJECT_A, PROJECT_B
from tests.crm_server.server_process import CrmClient, CrmServerProcess, new_phone

Call = Callable[[CrmClient], httpx.Response]


def project_routes(project: str, phone: str) -> dict[str, Call]:
    """One valid request per contract route, addressed to `project`."""
    body = {"project_id": project, "phone": phone}
    return {
        "connect": lambda c: c.post(
            "/integration/lovable/connect", json={**body, "webhook_url": "https://93.184.216.34/h"}
        ),
        "send": lambda c: c.post("/telegram/send", json={**body, "to": "@someone", "text": "hi"}),
        "status": lambda c: c.get("/telegram/status", params={"project_id": project}),
        "send-code": lambda c: c.post("/telegram/auth/send-code", json=body),
        "sign-in": lambda c: c.post("/telegram/auth/sign-in", json={**body, "code": "12345"}),
        "password": lambda c: c.post("/telegram/auth/password", json={**body, "password": "pw"}),
        "logout": lambda c: c.delete(f"/telegram/accounts/{phone}", params={"project_id": project}),
    }


def admin_routes(phone: str) -> dict[str, Call]:
    return {
        "sandbox-users": lambda c: c.post("/sandbox/users", json={"phone": new_phone()}),
        "sandbox-accounts": lambda c: c.post("/sandbox/accounts", json={"phone": new_phone()}),
        "sandbox-incoming": lambda c: c.post(
            "/sandbox/incoming", json={"account_phone": phone, "from": "+15550000000", "text": "x"}
        ),
        "sandbox-sent": lambda c: c.get("/sandbox/sent", params={"account_phone": phone}),
        "sandbox-flood": lambda c: c.post("/sandbox/flood", json={"account_phone": phone, "seconds": 1}),
        "sandbox-revoke": lambda c: c.post("/sandbox/revoke", json={"account_phone": phone}),
        "sandbox-requests": lambda c: c.get("/sandbox/requests"),
        # Counts across every tenant: the operator's, not a project's.
        "metrics": lambda c: c.get("/metrics"),
    }


def any_key_routes() -> dict[str, Call]:
    return {
        "openapi": lambda c: c.get("/openapi.json"),
    }


@pytest.mark.parametrize("route", sorted(project_routes("p", "+1").keys()))
def test_a_key_of_project_a_gets_403_on_project_b_data(client_a: CrmClient, route: str) -> None:
    response = project_routes(PROJECT_B, new_phone())[route](client_a)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "PROJECT_FORBIDDEN"
    assert response.json()["success"] is False


@pytest.mark.parametrize("route", sorted(admin_routes("+1").keys()))
def test_a_project_key_gets_403_on_the_admin_only_routes(client_a: CrmClient, route: str) -> None:
    response = admin_routes(new_phone())[route](client_a)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "PROJECT_FORBIDDEN"


def test_a_key_of_project_a_works_on_project_a(client_a: CrmClient, admin: CrmClient) -> None:
    phone = new_phone()
    response = project_routes(PROJECT_A, phone)["connect"](client_a)
    assert response.status_code == 200, response.text
    status = client_a.ok(client_a.get("/telegram/status", params={"project_id": PROJECT_A, "phone": phone}))
    assert [a["phone"] for a in status["accounts"]] == [phone]
    # ...and the admin key sees it too.
    assert admin.account(PROJECT_A, phone)["phone"] == phone


@pytest.mark.parametrize("key", [None, "", "tgcrm_not-a-real-key", "x" * 5000])
def test_a_missing_or_unknown_key_gets_401_on_every_route(crm_server: CrmServerProcess, key: str | None) -> None:
    client = crm_server.client(key)
    routes = {**project_routes(PROJECT_A, new_phone()), **admin_routes(new_phone()), **any_key_routes()}
    try:
        for name, call in routes.items():
            response = call(client)
            assert response.status_code == 401, f"{name}: {response.text}"
            assert response.json()["code"] == "UNAUTHORIZED", name
    finally:
        client.close()


def test_health_needs_no_key_and_shows_counts_across_tenants_only_to_the_admin(
        crm_server: CrmServerProcess, client_a: CrmClient, admin: CrmClient) -> None:
    anonymous = crm_server.client(None)
    assert anonymous.ok(anonymous.get("/health")) == {"status": "ok"}
    anonymous.close()
    assert client_a.ok(client_a.get("/health")) == {"status": "ok"}  # another tenant's traffic is not a project's
    body = admin.ok(admin.get("/health"))
    assert body["status"] == "ok"
    assert isinstance(body["accounts_connected"], int) and body["outbox_pending"] == 0


def test_webhook_urls_to_private_targets_are_refused(admin: CrmClient) -> None:
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://localhost/hook",
        "http://0.0.0.0/hook",
        "ftp://93.184.216.34/hook",
    ):
        response = admin.post(
            "/integration/lovable/connect",
            json={"project_id": PROJECT_A, "phone": new_phone(), "webhook_url": url},
        )
        assert response.status_code == 422, url
        assert response.json()["field"] == "webhook_url", url


def test_the_stored_session_does_not_hold_the_auth_key_in_clear(
    crm_server: CrmServerProcess, admin: CrmClient
) -> None:
    phone = new_phone()
    admin.login(PROJECT_A, phone)
    database = sqlite3.connect(crm_server.state_dir / "crm.sqlite3")
    try:
        (token,) = database.execute(
            "SELECT session FROM accounts WHERE project_id = ? AND phone = ?", (PROJECT_A, phone)
        ).fetchone()
    finally:
        database.close()
    key = (crm_server.state_dir / "crm_session.key").read_bytes().strip()
    session = json.loads(Fernet(key).decrypt(token))
    auth_key = base64.b64decode(session["auth_key"])
    assert len(auth_key) == 256
    assert auth_key not in token
    assert session["auth_key"].encode() not in token
    assert auth_key.hex().encode() not in token
    assert b'"auth_key"' not in token  # nothing of the document is readable


def test_the_session_key_file_is_private(crm_server: CrmServerProcess) -> None:
    mode = (crm_server.state_dir / "crm_session.key").stat().st_mode & 0o777
    assert mode == 0o600


def test_webhook_secrets_are_stored_encrypted(crm_server: CrmServerProcess, admin: CrmClient) -> None:
    secret = "whsec-stored-encrypted-7f3a9c"
    admin.ok(
        admin.post(
            "/integration/lovable/connect",
            json={"project_id": PROJECT_A, "phone": new_phone(), "webhook_url": "https://93.184.216.34/h", "secret": secret},
        )
    )
    for path in crm_server.state_dir.glob("crm.sqlite3*"):
        assert secret.encode() not in path.read_bytes(), path.name


def test_api_keys_are_stored_only_as_hashes(crm_server: CrmServerProcess, project_keys: dict[str, str]) -> None:
    for path in crm_server.state_dir.glob("crm.sqlite3*"):
        content = path.read_bytes()
        for key in (*project_keys.values(), crm_server.admin_key or ""):
            assert key.encode() not in content, path.name


def test_no_secret_reaches_the_server_log(
    crm_server: CrmServerProcess, admin: CrmClient, project_keys: dict[str, str]
) -> None:
    phone, password, secret = new_phone(), "log-canary-password-51", "log-canary-secret-0c1d"
    admin.login(PROJECT_A, phone, password=password)
    admin.post("/telegram/auth/password", json={"project_id": PROJECT_A, "phone": phone, "password": password + "x"})
    admin.ok(
        admin.post(
            "/integration/lovable/connect",
            json={"project_id": PROJECT_A, "phone": phone, "webhook_url": "https://93.184.216.34/h", "secret": secret},
        )
    )
    admin.post("/telegram/auth/send-code", json={"project_id": PROJECT_A, "phone": new_phone()})
    admin.post("/telegram/auth/sign-in", json={"project_id": PROJECT_A, "phone": phone, "code": "98765"})
    log = crm_server.log_text()
    assert "Started server process" in log  # the log is really being captured
    for canary in (password, secret, *project_keys.values()):
        assert canary not in log
    session_key = (crm_server.state_dir / "crm_session.key").read_text().strip()
    assert session_key not in log
    # The admin key appears once: the CRM_API_KEY line the contract asks for on first start.
    assert log.count(crm_server.admin_key or "-") == 1
    lines_with_codes = [line for line in log.splitlines() if "98765" in line or "12345" in line]
    assert [line for line in lines_with_codes if "server process" not in line] == []


def test_a_phone_of_one_project_is_refused_to_another_project(
        crm_server: CrmServerProcess, client_a: CrmClient, project_keys: dict[str, str]) -> None:
    """On the sandbox every login code is 12345: without this, project B connected project A's phone with its own
    key, logged in to A's account and read A's chats."""
    phone = new_phone()
    client_a.ok(client_a.post("/integration/lovable/connect", json={
        "project_id": PROJECT_A, "phone": phone, "webhook_url": "https://93.184.215.14/a"}))
    client_b = crm_server.client(project_keys[PROJECT_B])
    try:
        for response in (
            client_b.post("/integration/lovable/connect", json={
                "project_id": PROJECT_B, "phone": phone, "webhook_url": "https://93.184.215.14/b"}),
            client_b.post("/telegram/auth/send-code", json={"project_id": PROJECT_B, "phone": phone}),
        ):
            assert response.status_code == 409, response.text
            assert (response.json()["code"], response.json()["field"]) == ("ACCOUNT_HELD_BY_ANOTHER_PROJECT", "phone")
        statuses = client_b.ok(client_b.get("/telegram/status", params={"project_id": PROJECT_B}))["accounts"]
        assert phone not in {account["phone"] for account in statuses}
    finally:
        client_b.close()
    client_a.login(PROJECT_A, phone)  # its own project still logs it in
