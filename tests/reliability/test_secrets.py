"""Secrets stay secret: a full flow (connect, login with a code and a 2FA password, incoming, reply, status, a
restart) with every service logging at DEBUG, then no API key, webhook key or secret, login code, password or
session appears in crm_server's log, the API process's output or the logs captured here, nor any message text
nor, in the two processes' logs, a whole phone number (no `--log-payloads` here); and crm_server's store file holds none of the secrets in clear.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from crm_server.store import Store
from functions._shared.settings import FunctionsSettings
from functions.host import create_functions_app
from tests.crm_server.server_process import LOGIN_CODE
from tests.reliability.stack import ReliabilityStack, start_reliability_stack, stop_reliability_stack

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple 7f3a"
# Message texts of the flow: distinctive, so any log line carrying one is found.
INCOMING_TEXT = "an incoming text nobody logs 5e1f"
SECOND_INCOMING_TEXT = "a second incoming text nobody logs 3f8a"
REPLY_TEXT = "a reply nobody logs 9d4b"
# The login code is a short number: matched as a whole token, not inside longer numbers (ports, ids, timings).
LOGIN_CODE_TOKEN = re.compile(rf"(?<![0-9]){LOGIN_CODE}(?![0-9])")


@pytest.fixture(scope="module")
def debug_stack(reliability_stack: ReliabilityStack) -> Iterator[ReliabilityStack]:
    """crm_server and the API process of their own, logging at DEBUG, on the reliability suite's database."""
    reliability_stack.ensure_running()
    with tempfile.TemporaryDirectory(prefix="tgcrm-secrets-") as directory:
        stack = start_reliability_stack(Path(directory), crm_env={"CRM_LOG_LEVEL": "debug"}, api_log_level="debug",
                                        database=reliability_stack.database)
        try:
            yield stack
        finally:
            stop_reliability_stack(stack, stop_database=False)


@pytest.fixture
async def in_process_functions(debug_stack: ReliabilityStack) -> AsyncIterator[httpx.AsyncClient]:
    """The functions app in this process too (against the API process's REST), so its DEBUG logs reach caplog."""
    settings = FunctionsSettings(
        supabase_url=debug_stack.api.url, supabase_service_role_key=debug_stack.keys.service_role_key,
        supabase_jwt_secret=debug_stack.keys.jwt_secret, functions_public_url=debug_stack.api.url,
        crm_allow_http_loopback=True, settings_key=debug_stack.settings_key)
    app = create_functions_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://functions") as client:
            yield client


def _phone_without_the_code() -> str:
    from tests.crm_server.server_process import new_phone

    while True:
        phone = new_phone()
        if LOGIN_CODE not in phone:
            return phone


async def test_no_secret_is_logged_or_stored_in_clear(debug_stack: ReliabilityStack,
                                                      in_process_functions: httpx.AsyncClient,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stack = debug_stack
    tenant = await stack.tenant("Secrets")
    project_key = stack.project_key(tenant.organization_id)
    phone = _phone_without_the_code()
    await stack.crm_ok("POST", "/sandbox/accounts", json={"phone": phone, "password": PASSWORD})

    # Connect (in this process), then log in with the code and the 2FA password through the API process.
    connected = await in_process_functions.post("/telegram-crm-connect", headers=tenant.auth, json={
        "crmApiUrl": stack.crm.url, "crmApiKey": project_key, "crmPhoneNumber": phone})
    assert connected.status_code == 200, connected.text
    integration_id = connected.json()["integrationId"]
    auth_url = f"{stack.functions_url}/telegram-crm-auth"
    for step, extra, expected in (("send-code", {}, "code_sent"), ("sign-in", {"code": LOGIN_CODE},
                                                                    "password_required"),
                                  ("password", {"password": PASSWORD}, "authorized")):
        answer = await stack.http.post(auth_url, headers=tenant.auth, json={"integrationId": integration_id,
                                                                            "step": step, **extra})
        assert answer.status_code == 200 and answer.json()["status"] == expected, answer.text
    # A wrong code and a wrong password on the way are logged as failures, without the values tried.

    # A client writes; the webhook (signed with the secret) stores it; the manager replies from both hosts.
    _, user_phone, client_id = await stack.client_who_wrote(tenant, phone, INCOMING_TEXT, timeout=30,
                                                            first_name="Secretive")
    for client in (in_process_functions, None):
        body = {"clientId": client_id, "text": REPLY_TEXT}
        reply = await (client.post("/telegram-send", headers=tenant.auth, json=body) if client else
                       stack.http.post(f"{stack.functions_url}/telegram-send", headers=tenant.auth, json=body))
        assert reply.status_code == 200, reply.text
    status = await in_process_functions.get("/telegram-crm-status", headers=tenant.auth)
    assert status.status_code == 200 and status.json()["integrations"][0]["state"] == "authorized"
    # A restart: the session is read back from the store and decrypted; and a second message after it.
    stack.restart_crm()
    await stack.crm_ok("POST", "/sandbox/incoming", json={"account_phone": phone, "from": user_phone,
                                                           "text": SECOND_INCOMING_TEXT})
    assert await stack.wait_for_incoming(tenant.organization_id, 2, timeout=30) == 2

    webhook_key, webhook_secret = await stack.integration_secret(integration_id)
    session = await _stored_session(stack, tenant.organization_id, phone)
    auth_key = base64.b64decode(session["auth_key"])
    secrets = {
        "crm_server admin API key": stack.crm.admin_key or "",
        "crm_server project API key": project_key,
        "service-role key": stack.keys.service_role_key,
        "JWT secret": stack.keys.jwt_secret,
        "user access token": tenant.token,
        "functions settings key": stack.settings_key,
        "crm_server session key": (stack.crm.state_dir / "crm_session.key").read_text().strip(),
        "webhook secret": webhook_secret,
        # In the URL crm_server posts to and in the function's lookup by it (`webhook_key=eq.…`): query strings.
        "webhook key": webhook_key,
        "2FA password": PASSWORD,
        "session auth key (base64)": session["auth_key"],
        "session auth key (url-safe base64)": base64.urlsafe_b64encode(auth_key).decode(),
        "session auth key (hex)": auth_key.hex(),
    }
    assert all(secrets.values())

    # The first start prints the admin key once on stdout, by design (`CRM_API_KEY=`): that line is the command's
    # answer, not a log line; everything else the process wrote is checked.
    crm_output = "\n".join(line for line in stack.crm.log_text().splitlines() if not line.startswith("CRM_API_KEY="))
    logs = {
        "crm_server log": crm_output,
        "API process output": stack.api.log_text(),
        "captured here": caplog.text + "\n".join(
            f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records),
    }
    # DEBUG really was on everywhere (else this test would prove little).
    assert "DEBUG" in logs["crm_server log"] and "DEBUG" in logs["API process output"]
    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    leaks = [f"{name} in the {where}" for where, text in logs.items() for name, value in secrets.items()
             if value in text]
    leaks += [f"the login code in the {where}" for where, text in logs.items() if LOGIN_CODE_TOKEN.search(text)]
    leaks += [f"the message text {text!r} in the {where}" for where, logged in logs.items()
              for text in (INCOMING_TEXT, SECOND_INCOMING_TEXT, REPLY_TEXT) if text in logged]
    # Phones are personal data: crm_server's and the API process's lines name them by their last four digits only.
    leaks += [f"the {whose} phone in the {where}" for where in ("crm_server log", "API process output")
              for whose, number in (("account's", phone), ("client's", user_phone))
              if number.lstrip("+") in logs[where]]
    assert not leaks, "secrets, message texts or phones in the logs: " + "; ".join(leaks)

    # crm_server's store: keys hashed, webhook secret and session encrypted; nothing of the login kept.
    stored = b"".join(path.read_bytes() for path in stack.crm.state_dir.glob("crm.sqlite3*"))
    assert stored
    # The webhook key is part of the URL crm_server posts to: it keeps that URL to post at all.
    in_clear = [name for name, value in secrets.items()
                if name not in ("crm_server session key", "webhook key") and value.encode() in stored]
    in_clear += ["session auth key (raw)"] if auth_key in stored else []
    in_clear += ["the login code"] if re.search(rb"(?<![0-9])" + LOGIN_CODE.encode() + rb"(?![0-9])", stored) else []
    in_clear += ["the session document"] if b'"auth_key"' in stored else []
    assert not in_clear, "in clear in crm_server's store: " + ", ".join(in_clear)


async def _stored_session(stack: ReliabilityStack, project_id: str, phone: str) -> dict[str, object]:
    """The account's session as crm_server keeps it, decrypted with the server's own key."""
    key = (stack.crm.state_dir / "crm_session.key").read_bytes().strip()
    store = await Store.open(f"sqlite+aiosqlite:///{stack.crm.state_dir / 'crm.sqlite3'}", key)
    try:
        data = await store.accounts.load_session(project_id, phone)
    finally:
        await store.close()
    assert data is not None
    return json.loads(data)
