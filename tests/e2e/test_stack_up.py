"""`tgcrm up` end to end over real sockets: one stack for the module, started as a subprocess on free ports.

The story: connect an account (telegram-crm-connect) → log it in (telegram-crm-auth, code 12345) → a simulated
user writes → the message lands in chat_messages → a reply through telegram-send reaches the sandbox. Then the
supervisor's promises: a killed child comes back, a busy port is named, Ctrl-C leaves nothing running, state
survives a restart and `--fresh` starts empty.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil
import pytest

from functions._shared.sealed_settings import SettingsSealer, is_sealed
from tests.e2e.stack_process import LOGIN_CODE, StackProcess, hermetic_env
from tests.helpers.internal_service import http_answer, internal_service
from tests.helpers.net import free_port

CONTRACT_NAMES = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET",
                  "DATABASE_URL", "DEMO_USER_ID", "DEMO_USER_EMAIL", "DEMO_USER_PASSWORD", "DEMO_USER_JWT",
                  "DEMO_ORGANIZATION_ID", "CRM_URL", "CRM_API_KEY",
                  "CRM_SANDBOX")
DELIVERY_TIMEOUT = 45.0
_PHONES = itertools.count(int(time.time()) % 1_000_000)


def new_phone() -> str:
    return f"+7999{next(_PHONES) % 10_000_000:07d}"


@pytest.fixture(scope="module")
def stack() -> Iterator[StackProcess]:
    with tempfile.TemporaryDirectory(prefix="tgcrm-up-") as directory:
        process = StackProcess(Path(directory) / "state")
        process.start()
        try:
            yield process
        finally:
            if process.process is not None and process.process.poll() is None:
                process.stop()


@pytest.fixture(scope="module")
def api(stack: StackProcess) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


@pytest.fixture(scope="module")
def crm_admin(stack: StackProcess) -> Iterator[httpx.Client]:
    with stack.crm_admin() as client:
        yield client


def connect_and_log_in(api: httpx.Client, stack: StackProcess, phone: str) -> str:
    """An integration for a fresh sandbox account of the demo organization, logged in through telegram-crm-auth."""
    connected = api.post("/functions/v1/telegram-crm-connect", json={
        "crmApiUrl": stack.values["CRM_URL"], "crmApiKey": stack.values["CRM_DEMO_API_KEY"],
        "crmPhoneNumber": phone, "name": f"Sales {phone[-4:]}"})
    assert connected.status_code == 200, connected.text
    assert connected.json()["status"] == "auth_required"
    integration_id = connected.json()["integrationId"]
    sent = api.post("/functions/v1/telegram-crm-auth", json={"integrationId": integration_id, "step": "send-code"})
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "code_sent"
    signed_in = api.post("/functions/v1/telegram-crm-auth",
                         json={"integrationId": integration_id, "step": "sign-in", "code": LOGIN_CODE})
    assert signed_in.status_code == 200, signed_in.text
    assert signed_in.json()["status"] == "authorized"
    return integration_id


def poll_messages(api: httpx.Client, text: str, timeout: float = DELIVERY_TIMEOUT) -> dict[str, Any]:
    """The chat_messages row with `text`, read over REST as the demo user (RLS applies), once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api.get("/rest/v1/chat_messages", params={
            "select": "id,client_id,integration_id,message_text,is_outgoing", "message_text": f"eq.{text}"})
        assert found.status_code == 200, found.text
        if found.json():
            return found.json()[0]
        time.sleep(0.3)
    raise AssertionError(f"{text!r} did not reach chat_messages within {timeout}s")


# --- what it prints -------------------------------------------------------------------------------------------------

def test_prints_the_contract_lines_and_writes_them_to_the_env_file(stack: StackProcess) -> None:
    for name in CONTRACT_NAMES:
        assert stack.values.get(name), f"{name} was not printed"
    assert stack.values["CRM_SANDBOX"] == "1"
    assert stack.values["SUPABASE_URL"] == f"http://127.0.0.1:{stack.api_port}"
    assert stack.values["CRM_URL"] == f"http://127.0.0.1:{stack.crm_port}"
    assert stack.stdout_lines.index("READY") == len(stack.values)
    env_file = (stack.state_dir / "env").read_text().splitlines()
    assert env_file == [f"{name}={value}" for name, value in stack.values.items()]
    assert (stack.state_dir / "env").stat().st_mode & 0o077 == 0


def test_the_state_folder_and_everything_the_stack_made_in_it_are_closed_to_other_users(stack: StackProcess) -> None:
    state = stack.state_dir
    assert stack.process is not None
    for process in [psutil.Process(stack.process.pid), *stack.descendants()]:
        umask = next(line for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
                     if line.startswith("Umask:"))
        assert umask.split()[1] == "0077", (process.cmdline(), umask)
    expected = {".": 0o700, "postgres": 0o700}
    if os.geteuid() == 0:
        # PostgreSQL runs as its own user, let through to its data by the group of that user alone.
        expected = {".": 0o710, "postgres": 0o710}
        server_group = pwd.getpwnam("tgcrm_postgres").pw_gid
        assert state.stat().st_gid == (state / "postgres").stat().st_gid == server_group
    found = {}
    for path in [state, *state.rglob("*")]:
        relative = path.relative_to(state).as_posix()
        if relative.startswith("postgres/pgdata/"):
            continue  # PostgreSQL's own (it creates them 0600 and 0700 itself)
        found[relative] = stat.S_IMODE(path.lstat().st_mode)
    assert {"env", "jwt_secret", "crm.sqlite3", "crm_admin_api_key", "functions_settings.key", "demo_user_password",
            "postgres/postgres.log", "postgres/postgres.password", "postgres/pgdata"} <= set(found), sorted(found)
    wide = {relative: oct(mode) for relative, mode in found.items()
            if mode != expected.get(relative, 0o700 if (state / relative).is_dir() else 0o600)}
    assert wide == {}, wide


def test_every_service_answers_once_ready(stack: StackProcess, api: httpx.Client, crm_admin: httpx.Client) -> None:
    assert api.get("/health").status_code == 200
    organizations = api.get("/rest/v1/organizations", params={"select": "id,name"})
    assert organizations.status_code == 200
    assert [row["id"] for row in organizations.json()] == [stack.values["DEMO_ORGANIZATION_ID"]]
    providers = api.get("/functions/v1/telegram-providers").json()["providers"]
    assert {provider["key"] for provider in providers} == {"telegram_crm", "wappi"}
    admin_page = api.get("/admin/")
    assert admin_page.status_code == 200 and "admin.js" in admin_page.text
    assert crm_admin.get("/health").json()["status"] == "ok"


def test_crm_server_posts_webhooks_to_the_local_api_and_no_other_local_address(stack: StackProcess,
                                                                              crm_admin: httpx.Client) -> None:
    """The local stack used to allow every private address: the metadata address, the database, crm_server itself."""
    organization = stack.values["DEMO_ORGANIZATION_ID"]
    database_port = urlsplit(stack.values["DATABASE_URL"]).port
    for url in (f"http://127.0.0.1:{database_port}/", f"{stack.values['CRM_URL']}/telegram/send",
                "http://169.254.169.254/latest/meta-data/"):
        refused = crm_admin.post("/integration/lovable/connect", json={
            "project_id": organization, "phone": "+79990001122", "webhook_url": url})
        assert refused.status_code == 422 and refused.json()["field"] == "webhook_url", (url, refused.text)
    own = f"{stack.values['SUPABASE_URL']}/functions/v1/telegram-crm-webhook?key=not-a-real-key"
    accepted = crm_admin.post("/integration/lovable/connect", json={
        "project_id": organization, "phone": "+79990001122", "webhook_url": own})
    assert accepted.status_code == 200, accepted.text
    crm_admin.post("/integration/lovable/disconnect", json={"project_id": organization, "phone": "+79990001122"})


# --- auth and the gateway rule, as hosted Supabase has them ----------------------------------------------------------

def test_the_demo_user_signs_in_with_the_printed_email_and_password(stack: StackProcess) -> None:
    from supabase import create_client

    client = create_client(stack.values["SUPABASE_URL"], stack.values["SUPABASE_ANON_KEY"])
    answer = client.auth.sign_in_with_password({"email": stack.values["DEMO_USER_EMAIL"],
                                                "password": stack.values["DEMO_USER_PASSWORD"]})
    assert answer.user is not None and answer.user.id == stack.values["DEMO_USER_ID"]
    assert (stack.state_dir / "demo_user_password").read_text().strip() == stack.values["DEMO_USER_PASSWORD"]
    # The session's token reads the demo organization through /rest/v1 under RLS.
    organizations = client.table("organizations").select("id").execute().data
    assert [row["id"] for row in organizations] == [stack.values["DEMO_ORGANIZATION_ID"]]
    client.auth.sign_out()


def test_rest_and_auth_want_the_apikey_and_functions_the_bearer_token(stack: StackProcess) -> None:
    user = {"Authorization": f"Bearer {stack.values['DEMO_USER_JWT']}"}
    with httpx.Client(base_url=stack.values["SUPABASE_URL"], timeout=30.0) as http:
        rest = http.get("/rest/v1/organizations", params={"select": "id"}, headers=user)
        auth = http.get("/auth/v1/user", headers=user)
        # Hosted edge functions check the JWT in Authorization and need no apikey.
        function = http.get("/functions/v1/telegram-crm-status", headers=user)
        anon_bearer = http.get("/functions/v1/telegram-providers",
                               headers={"Authorization": f"Bearer {stack.values['SUPABASE_ANON_KEY']}"})
    missing = {"message": "No API key found in request", "hint": "No `apikey` request header or url param was found."}
    assert (rest.status_code, rest.json()) == (401, missing)
    assert (auth.status_code, auth.json()) == (401, missing)
    assert function.status_code == 200, function.text
    assert anon_bearer.status_code == 200


# --- the admin page answers only to its own loopback name (DNS rebinding) -------------------------------------------

def _admin(stack: StackProcess, method: str, path: str, **headers: str) -> httpx.Response:
    """A request to the API's /admin over a real socket to 127.0.0.1, carrying whatever Host/Origin a browser
    would send for the page it came from."""
    with httpx.Client(base_url=stack.values["SUPABASE_URL"], timeout=30.0) as client:
        return client.request(method, path, headers=headers)


def test_the_local_sign_in_refuses_a_host_that_is_not_loopback(stack: StackProcess) -> None:
    """A page on evil.example rebound to 127.0.0.1 reaches the port, but its requests still say Host: evil.example."""
    for host in ("evil.example", f"evil.example:{stack.api_port}", f"127.0.0.1.evil.example:{stack.api_port}",
                 f"192.168.1.10:{stack.api_port}"):
        refused = _admin(stack, "POST", "/admin/local/session", Host=host)
        assert refused.status_code == 403, (host, refused.text)
        assert refused.json() == {"success": False, "error": refused.json()["error"], "code": "HOST_NOT_ALLOWED"}
        assert stack.values["CRM_DEMO_API_KEY"] not in refused.text and "accessToken" not in refused.text


def test_the_local_sign_in_refuses_another_port_on_loopback(stack: StackProcess) -> None:
    refused = _admin(stack, "POST", "/admin/local/session", Host=f"127.0.0.1:{stack.api_port + 1}")
    assert refused.status_code == 403 and refused.json()["code"] == "HOST_NOT_ALLOWED", refused.text


def test_the_local_sign_in_refuses_a_foreign_origin(stack: StackProcess) -> None:
    own_host = f"127.0.0.1:{stack.api_port}"
    for origin in ("http://evil.example", f"http://evil.example:{stack.api_port}", "null",
                   f"http://localhost:{stack.api_port + 1}", f"https://{own_host}"):
        refused = _admin(stack, "POST", "/admin/local/session", Host=own_host, Origin=origin)
        assert refused.status_code == 403, (origin, refused.text)
        assert refused.json()["success"] is False and refused.json()["code"] == "ORIGIN_NOT_ALLOWED", refused.text
        assert "accessToken" not in refused.text


def test_the_local_sign_in_answers_its_own_loopback_names(stack: StackProcess) -> None:
    port = stack.api_port
    for host, origin in ((f"127.0.0.1:{port}", None), (f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"),
                         (f"localhost:{port}", f"http://localhost:{port}"), (f"LocalHost:{port}", None),
                         (f"127.0.0.2:{port}", None), (f"[::1]:{port}", f"http://[::1]:{port}")):
        headers = {"Host": host, **({"Origin": origin} if origin else {})}
        answer = _admin(stack, "POST", "/admin/local/session", **headers)
        assert answer.status_code == 200, (host, origin, answer.text)
        assert answer.json()["accessToken"]


def test_the_rest_of_the_admin_page_refuses_a_host_that_is_not_loopback(stack: StackProcess) -> None:
    for path in ("/admin/", "/admin/config.json", "/admin/static/admin.js"):
        assert _admin(stack, "GET", path).status_code == 200, path
        refused = _admin(stack, "GET", path, Host=f"evil.example:{stack.api_port}")
        assert refused.status_code == 403, (path, refused.text)
        assert refused.json()["code"] == "HOST_NOT_ALLOWED"
        foreign = _admin(stack, "GET", path, Origin="http://evil.example")
        assert foreign.status_code == 403 and foreign.json()["code"] == "ORIGIN_NOT_ALLOWED", (path, foreign.text)


# --- the story ------------------------------------------------------------------------------------------------------

def test_connect_login_incoming_message_and_reply(stack: StackProcess, api: httpx.Client,
                                                  crm_admin: httpx.Client) -> None:
    phone = new_phone()
    integration_id = connect_and_log_in(api, stack, phone)
    status = api.get("/functions/v1/telegram-crm-status", params={"integrationId": integration_id})
    assert status.status_code == 200, status.text
    assert status.json()["integrations"][0]["state"] == "authorized"

    # A simulated Telegram user writes to the account (crm_server's sandbox control, admin key).
    sender_phone = new_phone()
    assert crm_admin.post("/sandbox/users", json={"phone": sender_phone, "first_name": "Olga",
                                                  "username": f"olga{sender_phone[-7:]}"}).status_code == 200
    text = f"Hello from Olga {uuid.uuid4().hex[:8]}"
    incoming = crm_admin.post("/sandbox/incoming", json={"account_phone": phone, "from": sender_phone, "text": text})
    assert incoming.status_code == 200, incoming.text

    # crm_server's listener → webhook → telegram-crm-webhook → chat_messages, read back as the demo user.
    message = poll_messages(api, text)
    assert message["is_outgoing"] is False
    assert message["integration_id"] == integration_id

    reply = f"Thanks, Olga {uuid.uuid4().hex[:8]}"
    sent = api.post("/functions/v1/telegram-send", json={"clientId": message["client_id"], "text": reply})
    assert sent.status_code == 200, sent.text
    assert sent.json()["success"] is True

    in_sandbox = crm_admin.get("/sandbox/sent", params={"account_phone": phone})
    assert in_sandbox.status_code == 200
    assert reply in [entry["text"] for entry in in_sandbox.json()]
    stored = poll_messages(api, reply, timeout=5)
    assert stored["is_outgoing"] is True and stored["client_id"] == message["client_id"]


# The two clients supabase/seed.sql gives the demo organization.
SEED_CLIENTS = {"00000000-0000-4000-8000-0000000000c1": "+79990000001",  # Ivan Petrov, @ivan_petrov
                "00000000-0000-4000-8000-0000000000c2": "+79990000002"}  # Maria Smirnova, a phone only


def test_a_reply_to_the_seed_clients_reaches_them_in_the_sandbox(stack: StackProcess, api: httpx.Client,
                                                                  crm_admin: httpx.Client) -> None:
    phone = new_phone()
    integration_id = connect_and_log_in(api, stack, phone)
    texts = {}
    for client_id in SEED_CLIENTS:
        texts[client_id] = f"Hello from the demo {uuid.uuid4().hex[:8]}"
        sent = api.post("/functions/v1/telegram-send",
                        json={"clientId": client_id, "text": texts[client_id], "integrationId": integration_id})
        assert sent.status_code == 200, sent.text

    received_by = {entry["text"]: entry["to_user_id"]
                   for entry in crm_admin.get("/sandbox/sent", params={"account_phone": phone}).json()}
    for client_id, client_phone in SEED_CLIENTS.items():
        # /sandbox/users is idempotent by phone: it answers the simulated user `tgcrm up` made for the seed.
        user = crm_admin.post("/sandbox/users", json={"phone": client_phone})
        assert user.status_code == 200, user.text
        assert received_by[texts[client_id]] == user.json()["user_id"]


def test_sandbox_function_makes_a_simulated_user_write(stack: StackProcess, api: httpx.Client) -> None:
    phone = new_phone()
    integration_id = connect_and_log_in(api, stack, phone)
    text = f"Written through telegram-crm-sandbox {uuid.uuid4().hex[:8]}"
    written = api.post("/functions/v1/telegram-crm-sandbox", json={
        "integrationId": integration_id, "fromPhone": new_phone(), "fromName": "Pavel", "text": text})
    assert written.status_code == 200, written.text
    assert written.json()["accountPhone"] == phone
    assert poll_messages(api, text)["integration_id"] == integration_id


def test_the_functions_reach_this_stacks_crm_server_and_no_other_loopback_port(stack: StackProcess,
                                                                              api: httpx.Client) -> None:
    # Another service on loopback (a database, another stack's admin port): local mode reaches loopback, and of
    # loopback only what the stack needs.
    with internal_service(http_answer(200, "{}", "application/json")) as other_service:
        for url in (other_service.url(), other_service.url("localhost")):
            refused = api.post("/functions/v1/telegram-crm-connect", json={
                "crmApiUrl": url, "crmApiKey": stack.values["CRM_DEMO_API_KEY"], "crmPhoneNumber": new_phone()})
            assert refused.status_code == 422, refused.text
            assert refused.json()["code"] == "CRM_SERVER_ADDRESS_NOT_ALLOWED"
        assert other_service.reached == 0
    own = stack.values["CRM_URL"].replace("127.0.0.1", "localhost")
    connected = api.post("/functions/v1/telegram-crm-connect", json={
        "crmApiUrl": own, "crmApiKey": stack.values["CRM_DEMO_API_KEY"], "crmPhoneNumber": new_phone()})
    assert connected.status_code == 200, connected.text


def test_wrong_login_code_is_a_field_error(stack: StackProcess, api: httpx.Client) -> None:
    connected = api.post("/functions/v1/telegram-crm-connect", json={
        "crmApiUrl": stack.values["CRM_URL"], "crmApiKey": stack.values["CRM_DEMO_API_KEY"],
        "crmPhoneNumber": new_phone()})
    integration_id = connected.json()["integrationId"]
    assert api.post("/functions/v1/telegram-crm-auth",
                    json={"integrationId": integration_id, "step": "send-code"}).status_code == 200
    wrong = api.post("/functions/v1/telegram-crm-auth",
                     json={"integrationId": integration_id, "step": "sign-in", "code": "00000"})
    assert wrong.status_code == 422
    assert wrong.json()["code"] == "INVALID_CODE"
    missing = api.post("/functions/v1/telegram-crm-auth", json={"integrationId": integration_id, "step": "sign-in"})
    assert missing.status_code == 422 and missing.json()["field"] == "code"


def test_admin_functions_keep_organizations_apart(stack: StackProcess, api: httpx.Client) -> None:
    integration_id = api.post("/functions/v1/telegram-crm-connect", json={
        "crmApiUrl": stack.values["CRM_URL"], "crmApiKey": stack.values["CRM_DEMO_API_KEY"],
        "crmPhoneNumber": new_phone()}).json()["integrationId"]
    outsider = asyncio.run(_other_organization_user(stack.values["DATABASE_URL"]))
    from supabase_local.keys import user_token

    with stack.client(user_token(outsider, stack.values["SUPABASE_JWT_SECRET"])) as other:
        for name, body in (("telegram-crm-auth", {"integrationId": integration_id, "step": "send-code"}),
                           ("telegram-crm-status", {"integrationId": integration_id}),
                           ("telegram-crm-sandbox", {"integrationId": integration_id, "fromPhone": new_phone(),
                                                     "text": "hi"})):
            answer = other.post(f"/functions/v1/{name}", json=body)
            assert answer.status_code == 404, (name, answer.text)
            assert answer.json()["code"] == "INTEGRATION_NOT_FOUND"
        assert other.get("/functions/v1/telegram-crm-status").json()["integrations"] == []
    anonymous = httpx.post(f"{stack.values['SUPABASE_URL']}/functions/v1/telegram-crm-auth",
                           json={"integrationId": integration_id, "step": "send-code"})
    assert anonymous.status_code == 401


def test_integration_secrets_are_sealed_with_a_key_kept_in_the_state_folder(stack: StackProcess,
                                                                           api: httpx.Client) -> None:
    key_file = stack.state_dir / "functions_settings.key"
    assert key_file.stat().st_mode & 0o077 == 0
    # Logging in calls crm_server with the integration's API key, opened from the sealed row.
    integration_id = connect_and_log_in(api, stack, new_phone())
    row, settings = asyncio.run(_integration_row(stack.values["DATABASE_URL"], integration_id))
    opened = SettingsSealer(key_file.read_text().strip()).open(settings)
    assert opened["crmApiKey"] == stack.values["CRM_DEMO_API_KEY"]
    assert is_sealed(settings["crmApiKey"]) and is_sealed(settings["secret"])
    assert opened["crmApiKey"] not in row and opened["secret"] not in row


async def _integration_row(dsn: str, integration_id: str) -> tuple[str, dict[str, Any]]:
    """The messenger_integrations row as PostgreSQL holds it (every column, as text) and its settings."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT row_to_json(i)::text AS row, settings::text AS settings "
                                  "FROM public.messenger_integrations i WHERE i.id = $1", uuid.UUID(integration_id))
    finally:
        await conn.close()
    assert row is not None
    return row["row"], json.loads(row["settings"])


async def _other_organization_user(dsn: str) -> str:
    organization_id, user_id = str(uuid.uuid4()), str(uuid.uuid4())
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Outsiders')", organization_id)
        await conn.execute("INSERT INTO auth.users (id, email) VALUES ($1, $2)", user_id, f"{user_id}@x.test")
        await conn.execute("INSERT INTO profiles (id, organization_id) VALUES ($1, $2)", user_id, organization_id)
    finally:
        await conn.close()
    return user_id


# --- the command line beside a running stack -------------------------------------------------------------------------

def test_keys_create_and_login_from_another_folder_reach_the_stack_named_by_tgcrm_state_dir(
        stack: StackProcess, crm_admin: httpx.Client, tmp_path: Path) -> None:
    organization_id, phone = stack.values["DEMO_ORGANIZATION_ID"], new_phone()
    env = {**hermetic_env(), "TGCRM_STATE_DIR": str(stack.state_dir)}
    created = subprocess.run([sys.executable, "-m", "tgcrm", "keys", "create", "--project", organization_id],
                             capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    project_status = httpx.get(f"{stack.values['CRM_URL']}/telegram/status", params={"project_id": organization_id},
                               headers={"X-API-Key": created.stdout.strip()}, timeout=30)
    assert project_status.status_code == 200, project_status.text
    login = subprocess.run([sys.executable, "-m", "tgcrm", "login", "--sandbox", "--project", organization_id,
                            "--phone", phone], input=f"{LOGIN_CODE}\n", capture_output=True, text=True, timeout=60,
                           env=env, cwd=tmp_path)
    assert login.returncode == 0, login.stdout + login.stderr
    accounts = crm_admin.get("/telegram/status", params={"project_id": organization_id, "phone": phone}).json()
    assert [account["phone"] for account in accounts["accounts"]] == [phone]
    assert list(tmp_path.iterdir()) == []


# --- supervision ----------------------------------------------------------------------------------------------------

def test_a_killed_child_is_reported_and_restarted(stack: StackProcess, crm_admin: httpx.Client) -> None:
    crm = stack.child("crm_server")
    offset = stack.log_size()
    crm.kill()
    stack.wait_for_log("crm_server exited with code -9 (SIGKILL); restarting it", after=offset)
    stack.wait_for_log("crm_server is running again", after=offset, timeout=120)
    assert stack.child("crm_server").pid != crm.pid
    assert crm_admin.get("/health").status_code == 200


def test_a_busy_port_is_named_with_its_flag(stack: StackProcess, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tgcrm", "up", "--state-dir", str(tmp_path / "state"), "--api-port",
         str(stack.api_port), "--crm-port", str(free_port()), "--db-port", str(free_port())],
        capture_output=True, text=True, timeout=60, env=hermetic_env(), cwd=tmp_path)
    assert result.returncode == 1
    assert f"port {stack.api_port}" in result.stderr and "--api-port" in result.stderr
    assert "READY" not in result.stdout


def test_a_second_stack_on_the_same_state_folder_is_refused(stack: StackProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tgcrm", "up", "--state-dir", str(stack.state_dir), "--api-port", str(free_port()),
         "--crm-port", str(free_port()), "--db-port", str(free_port())],
        capture_output=True, text=True, timeout=60, env=hermetic_env(), cwd=stack.state_dir.parent)
    assert result.returncode == 1
    assert "another `tgcrm up` is running" in result.stderr


# --- stopping (last: it ends the module's stack) ---------------------------------------------------------------------

def test_sigint_stops_every_child_and_postgres_and_state_survives_a_restart(stack: StackProcess,
                                                                            api: httpx.Client) -> None:
    integration_id = connect_and_log_in(api, stack, new_phone())
    admin_key = stack.values["CRM_API_KEY"]
    settings_key = (stack.state_dir / "functions_settings.key").read_text()
    tree = stack.descendants()
    assert any("postgres" in " ".join(process.cmdline()) for process in tree)
    assert {"crm_server", "serve-api"} <= {part for process in tree for part in process.cmdline()}

    assert stack.stop(signal.SIGINT) == 0
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], f"left running: {[(process.pid, process.cmdline()) for process in alive]}"
    for port in (stack.api_port, stack.crm_port, stack.db_port):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)

    # Same state folder: same keys (the sealed settings still open), the integration is still there and its
    # account still logged in.
    stack.start()
    try:
        assert stack.values["CRM_API_KEY"] == admin_key
        assert (stack.state_dir / "functions_settings.key").read_text() == settings_key
        with stack.client() as again:
            status = again.get("/functions/v1/telegram-crm-status", params={"integrationId": integration_id})
            assert status.status_code == 200, status.text
            assert status.json()["integrations"][0]["state"] == "authorized"
            # The demo clients were made sandbox users again, which the sandbox took as the users it has.
            reply = again.post("/functions/v1/telegram-send", json={
                "clientId": next(iter(SEED_CLIENTS)), "text": "Still there?", "integrationId": integration_id})
            assert reply.status_code == 200, reply.text
        assert "demo client" not in stack.log_path.read_text(errors="replace")
    finally:
        assert stack.stop(signal.SIGTERM) == 0

    # --fresh: nothing of the above is left.
    stack.start("--fresh")
    try:
        with stack.client() as fresh:
            integrations = fresh.get("/rest/v1/messenger_integrations", params={"select": "id"})
            assert integrations.status_code == 200 and integrations.json() == []
        assert stack.values["CRM_API_KEY"] != admin_key
        assert (stack.state_dir / "functions_settings.key").read_text() != settings_key
    finally:
        assert stack.stop(signal.SIGINT) == 0


def test_the_local_crm_defaults_are_for_the_demo_users_own_token_only(stack: StackProcess) -> None:
    from supabase_local.keys import user_token

    secret = stack.values["SUPABASE_JWT_SECRET"]
    own = _admin(stack, "POST", "/admin/local/crm-defaults",
                 Authorization=f"Bearer {user_token(stack.values['DEMO_USER_ID'], secret)}")
    assert own.status_code == 200, own.text
    assert own.json()["crmDefaults"] == {"crmApiUrl": stack.values["CRM_URL"],
                                         "crmApiKey": stack.values["CRM_DEMO_API_KEY"]}
    for authorization, status in ((None, 404), ("Bearer not-a-token", 401),
                                  (f"Bearer {user_token(str(uuid.uuid4()), secret)}", 404),
                                  (f"Bearer {user_token(stack.values['DEMO_USER_ID'], 'another secret')}", 401)):
        headers = {"Authorization": authorization} if authorization else {}
        refused = _admin(stack, "POST", "/admin/local/crm-defaults", **headers)
        assert refused.status_code == status, (authorization, refused.text)
        assert stack.values["CRM_DEMO_API_KEY"] not in refused.text
