"""Sending through /telegram/send: every recipient form, Telegram's refusals, pacing and idempotency."""

from __future__ import annotations

import time

import pytest

from tests.crm_server.conftest import PROJECT_A
from tests.crm_server.server_process import CrmClient, new_phone


@pytest.fixture
def account(admin: CrmClient) -> str:
    """A freshly logged-in account of project A (each test its own, so rate limits never interfere)."""
    phone = new_phone()
    admin.login(PROJECT_A, phone)
    return phone


def simulated_user(admin: CrmClient, **fields: object) -> tuple[int, str, str]:
    phone = new_phone()
    username = f"user{phone[1:]}"
    return admin.user(phone, username=username, **fields), phone, username


def test_send_to_a_username(admin: CrmClient, account: str) -> None:
    user_id, _, username = simulated_user(admin)
    response = admin.send(PROJECT_A, account, f"@{username}", "hello by username")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "sent"
    assert body["to_user_id"] == user_id and body["chat_id"] == user_id
    assert isinstance(body["message_id"], int) and body["date"].endswith("Z")
    assert admin.sent(account) == [
        {"to_user_id": user_id, "text": "hello by username", "message_id": body["message_id"], "date": admin.sent(account)[0]["date"]}
    ]


def test_send_to_a_phone_imports_the_contact(admin: CrmClient, account: str) -> None:
    user_id, phone, _ = simulated_user(admin)
    response = admin.send(PROJECT_A, account, phone, "hello by phone")
    assert response.status_code == 200, response.text
    assert response.json()["to_user_id"] == user_id
    assert [(m["to_user_id"], m["text"]) for m in admin.sent(account)] == [(user_id, "hello by phone")]


def test_send_to_a_numeric_id_the_account_has_seen(admin: CrmClient, account: str) -> None:
    user_id = admin.user(new_phone(), first_name="Writer")  # no username: reachable by id only once seen
    admin.ok(admin.post("/sandbox/incoming", json={"account_phone": account, "from": user_id, "text": "hi there"}))
    response = None
    for _ in range(4):  # the incoming update reaches the client's entity cache asynchronously
        time.sleep(0.2)
        response = admin.send(PROJECT_A, account, str(user_id), "reply by id")
        if response.status_code == 200:
            break
    assert response is not None and response.status_code == 200, response.text
    assert response.json()["to_user_id"] == user_id
    assert [m["to_user_id"] for m in admin.sent(account)] == [user_id]


def test_send_to_a_numeric_id_never_seen_is_422_recipient_not_found(admin: CrmClient, account: str) -> None:
    stranger = admin.user(new_phone())
    response = admin.send(PROJECT_A, account, stranger, "who are you")
    assert response.status_code == 422
    assert response.json()["code"] == "RECIPIENT_NOT_FOUND" and response.json()["field"] == "to"
    assert admin.sent(account) == []


def test_send_to_an_unknown_username_is_422_recipient_not_found(admin: CrmClient, account: str) -> None:
    response = admin.send(PROJECT_A, account, "@nobody_has_this_name", "hello?")
    assert response.status_code == 422
    assert response.json()["code"] == "RECIPIENT_NOT_FOUND"
    assert admin.sent(account) == []


def test_send_to_a_phone_without_telegram_is_422_recipient_not_found(admin: CrmClient, account: str) -> None:
    response = admin.send(PROJECT_A, account, "+19990000000", "hello?")
    assert response.status_code == 422
    assert response.json()["code"] == "RECIPIENT_NOT_FOUND"


def test_send_to_a_privacy_restricted_user_is_403(admin: CrmClient, account: str) -> None:
    _, _, username = simulated_user(admin, privacy_restricted=True)
    response = admin.send(PROJECT_A, account, f"@{username}", "may I?")
    assert response.status_code == 403
    assert response.json()["code"] == "RECIPIENT_PRIVACY"
    assert admin.sent(account) == []


def test_send_under_flood_wait_is_429_with_retry_after_and_holds_back_later_sends(
    admin: CrmClient, account: str
) -> None:
    _, _, username = simulated_user(admin)
    admin.ok(admin.post("/sandbox/flood", json={"account_phone": account, "seconds": 42}))
    response = admin.send(PROJECT_A, account, f"@{username}", "too soon")
    assert response.status_code == 429
    assert response.json()["code"] == "FLOOD_WAIT"
    assert 41 <= int(response.headers["Retry-After"]) <= 42
    # The server remembers the wait: the next send is refused without asking Telegram (whose flood was one-shot).
    again = admin.send(PROJECT_A, account, f"@{username}", "still too soon")
    assert again.status_code == 429 and again.json()["code"] == "FLOOD_WAIT"
    assert 1 <= int(again.headers["Retry-After"]) <= 42
    assert admin.sent(account) == []


def test_sending_faster_than_the_pace_is_429_rate_limited_with_retry_after(admin: CrmClient, account: str) -> None:
    _, _, username = simulated_user(admin)
    statuses = [admin.send(PROJECT_A, account, f"@{username}", f"message {i}").status_code for i in range(5)]
    assert statuses == [200] * 5  # the shared server's burst (CRM_SEND_BURST=5)
    limited = admin.send(PROJECT_A, account, f"@{username}", "one too many")
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    # 30 a minute: the next token is at most two seconds away.
    assert 1 <= int(limited.headers["Retry-After"]) <= 2
    assert len(admin.sent(account)) == 5


def test_a_reused_idempotency_key_sends_once_and_returns_the_first_result(admin: CrmClient, account: str) -> None:
    _, _, username = simulated_user(admin)
    headers = {"Idempotency-Key": f"order-{account}-1"}
    first = admin.send(PROJECT_A, account, f"@{username}", "exactly once", headers=headers)
    second = admin.send(PROJECT_A, account, f"@{username}", "exactly once", headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert [m["text"] for m in admin.sent(account)] == ["exactly once"]
    # A different key is a different message.
    third = admin.send(PROJECT_A, account, f"@{username}", "exactly once", headers={"Idempotency-Key": "other"})
    assert third.json()["message_id"] != first.json()["message_id"]
    assert len(admin.sent(account)) == 2


def test_a_failed_send_does_not_burn_its_idempotency_key(admin: CrmClient, account: str) -> None:
    _, _, username = simulated_user(admin)
    headers = {"Idempotency-Key": f"retry-{account}"}
    failed = admin.send(PROJECT_A, account, "@nobody_has_this_name", "first try", headers=headers)
    assert failed.status_code == 422
    retried = admin.send(PROJECT_A, account, f"@{username}", "second try", headers=headers)
    assert retried.status_code == 200
    assert [m["text"] for m in admin.sent(account)] == ["second try"]


def test_send_with_a_file_url_to_a_private_address_is_refused(admin: CrmClient, account: str) -> None:
    """crm_server fetches the file itself: a caller must not make it read addresses behind its firewall (the files
    it sends are tested in tests/crm_server/test_outgoing_media.py)."""
    _, _, username = simulated_user(admin)
    for url in ("http://127.0.0.1:8090/health", "http://169.254.169.254/latest/meta-data/", "http://localhost/x"):
        response = admin.send(PROJECT_A, account, f"@{username}", "the invoice", file_url=url,
                              file_name="invoice.pdf", file_type="document")
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "FILE_UNAVAILABLE" and response.json()["field"] == "file_url"
    assert admin.sent(account) == []


def test_send_needs_a_text_or_a_file(admin: CrmClient, account: str) -> None:
    _, _, username = simulated_user(admin)
    for body in ({}, {"text": ""}, {"text": "   "}):
        response = admin.post("/telegram/send", json={"project_id": PROJECT_A, "phone": account,
                                                      "to": f"@{username}", **body})
        assert response.status_code == 422 and response.json()["field"] == "text", body
    response = admin.send(PROJECT_A, account, f"@{username}", "", file_url="https://example.com/a.pdf",
                          file_type="spreadsheet")
    assert response.status_code == 422 and response.json()["field"] == "file_type"


def test_send_from_an_unknown_account_is_404(admin: CrmClient) -> None:
    response = admin.send(PROJECT_A, new_phone(), "@someone", "hi")
    assert response.status_code == 404 and response.json()["code"] == "ACCOUNT_NOT_FOUND"


def test_send_from_an_account_that_never_logged_in_is_409(admin: CrmClient) -> None:
    phone = new_phone()
    admin.ok(
        admin.post(
            "/integration/lovable/connect",
            json={"project_id": PROJECT_A, "phone": phone, "webhook_url": "https://93.184.216.34/h"},
        )
    )
    response = admin.send(PROJECT_A, phone, "@someone", "hi")
    assert response.status_code == 409 and response.json()["code"] == "ACCOUNT_NOT_AUTHORIZED"


def test_a_revoked_session_shows_logged_out_and_is_not_retried(admin: CrmClient, account: str) -> None:
    admin.ok(admin.post("/sandbox/revoke", json={"account_phone": account}))
    status = admin.wait_account(PROJECT_A, account, "logged_out")
    assert status["state"] == "logged_out"
    assert status["authorized"] is False and status["connected"] is False

    def connection_requests() -> int:
        counts = admin.ok(admin.get("/sandbox/requests"))["counts"]
        return sum(counts.get(name, 0) for name in ("GetConfigRequest", "GetUsersRequest", "GetDifferenceRequest"))

    before = connection_requests()
    time.sleep(3)  # longer than the first reconnect backoff (1 s)
    assert connection_requests() == before
    assert admin.account(PROJECT_A, account)["state"] == "logged_out"
    response = admin.send(PROJECT_A, account, "@someone", "anyone there?")
    assert response.status_code == 409 and response.json()["code"] == "ACCOUNT_NOT_AUTHORIZED"


def test_a_revoked_session_found_by_a_send_answers_409(admin: CrmClient, account: str) -> None:
    _, _, username = simulated_user(admin)
    assert admin.send(PROJECT_A, account, f"@{username}", "before").status_code == 200
    admin.ok(admin.post("/sandbox/revoke", json={"account_phone": account}))
    response = admin.send(PROJECT_A, account, f"@{username}", "after")
    assert response.status_code == 409 and response.json()["code"] == "ACCOUNT_NOT_AUTHORIZED"
    assert [m["text"] for m in admin.sent(account)] == ["before"]
    assert admin.account(PROJECT_A, account)["state"] == "logged_out"


def test_concurrent_requests_with_one_idempotency_key_send_once(admin: CrmClient, account: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, _, username = simulated_user(admin)
    headers = {"Idempotency-Key": f"race-{account}"}
    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(
            pool.map(lambda _: admin.send(PROJECT_A, account, f"@{username}", "raced", headers=headers), range(4))
        )
    assert [r.status_code for r in responses] == [200] * 4
    assert len({r.json()["message_id"] for r in responses}) == 1
    assert [m["text"] for m in admin.sent(account)] == ["raced"]
