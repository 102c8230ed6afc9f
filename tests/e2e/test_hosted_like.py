"""`tgcrm functions` next to a Supabase project it knows only by URL and keys, as beside a hosted one: `tgcrm db up`,
`tgcrm server --sandbox` and `tgcrm functions` as three separate processes, driven the way a user's CRM drives them.

The user signs in through /auth/v1 with supabase-py, calls the functions with supabase-py's functions client and
reads the CRM's rows with supabase-py under RLS; only a simulated Telegram user talks to crm_server directly.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from supabase import AsyncClient, AsyncClientOptions, acreate_client
from supabase_functions import AsyncFunctionsClient

from tests.e2e.stack_process import hermetic_env
from tests.helpers.announcing_process import AnnouncingProcess
from tests.helpers.net import free_port

# The seed's demo organization and its admin user (supabase/seed.sql); `db up` gives the user no password.
DEMO_ORGANIZATION_ID = "00000000-0000-4000-8000-000000000001"
DEMO_USER_ID = "00000000-0000-4000-8000-0000000000a1"
DEMO_USER_EMAIL = "admin@demo.local"
PASSWORD = "hosted-like password 1"
ACCOUNT_PHONE, USER_PHONE = "+15559990001", "+15559990002"
METRICS_KEY = "hosted-like-metrics-key"


class HostedLike:
    """The three processes and what each told the others: nothing but URLs and keys."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.processes: list[AnnouncingProcess] = []
        self.supabase: dict[str, str] = {}
        self.crm: dict[str, str] = {}
        self.functions_url = ""

    def start(self) -> None:
        db_state, crm_state = self.root / "supabase-state", self.root / "crm-state"
        database = self._start("db", ["db", "up", "--state-dir", str(db_state), "--api-port", str(free_port()),
                                      "--db-port", str(free_port())], {})
        self.supabase = database.start()

        # crm_server posts webhooks to the functions on loopback; hosted, they would be at a public address.
        crm = self._start("crm", ["server", "--sandbox", "--state-dir", str(crm_state), "--port", str(free_port())],
                          {"CRM_ALLOW_PRIVATE_WEBHOOKS": "1"})
        self.crm = crm.start()
        self.crm_state = crm_state

        port = free_port()
        functions = self._start("functions", ["functions", "--port", str(port)], {
            "SUPABASE_URL": self.supabase["SUPABASE_URL"],
            "SUPABASE_SERVICE_ROLE_KEY": self.supabase["SUPABASE_SERVICE_ROLE_KEY"],
            "SUPABASE_JWT_SECRET": self.supabase["SUPABASE_JWT_SECRET"],
            "FUNCTIONS_SETTINGS_KEY": Fernet.generate_key().decode(),
            "FUNCTIONS_METRICS_KEY": METRICS_KEY,
            # crm_server is on loopback over http here; hosted, it is https at a public address (FUNCTIONS_CRM_HOSTS).
            "CRM_ALLOW_HTTP_LOOPBACK": "1",
        })
        self.functions_url = functions.start()["FUNCTIONS_URL"]

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> AnnouncingProcess:
        process = AnnouncingProcess(name, args, cwd=self.root, env={**hermetic_env(), **env})
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {process.name}\n{process.log_text()}" for process in self.processes)

    def project_key(self) -> str:
        """`tgcrm keys create` on crm_server's machine: the key the organization connects with."""
        return subprocess.run([sys.executable, "-m", "tgcrm", "keys", "create", "--project", DEMO_ORGANIZATION_ID,
                               "--state-dir", str(self.crm_state)], capture_output=True, text=True, check=True,
                              timeout=60, env=hermetic_env(), cwd=self.root).stdout.strip()


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostedLike]:
    services = HostedLike(tmp_path_factory.mktemp("hosted-like"))
    try:
        services.start()
        yield services
    finally:
        services.stop()


async def supabase_client(hosted: HostedLike, key: str) -> AsyncClient:
    return await acreate_client(hosted.supabase["SUPABASE_URL"], key, options=AsyncClientOptions())


async def invoke(functions: AsyncFunctionsClient, name: str, body: dict[str, Any]) -> Any:
    """A function's JSON answer; supabase-py's client raises FunctionsHttpError for an error answer."""
    return await functions.invoke(name, {"body": body, "responseType": "json"})


async def wait_for_row(client: AsyncClient, integration_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = (await client.table("chat_messages").select("*").eq("integration_id", integration_id)
                 .eq("is_outgoing", False).execute()).data
        if found:
            return found[0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, "the incoming message never reached chat_messages"
        await asyncio.sleep(0.2)


async def test_a_user_connects_logs_in_receives_and_replies_through_a_separate_functions_host(
        hosted: HostedLike) -> None:
    # The project's owner gives the demo user a password with the service role, as in Supabase's dashboard.
    admin = await supabase_client(hosted, hosted.supabase["SUPABASE_SERVICE_ROLE_KEY"])
    await admin.auth.admin.update_user_by_id(DEMO_USER_ID, {"password": PASSWORD})

    # The CRM's user signs in with the anon key, as a browser does.
    user = await supabase_client(hosted, hosted.supabase["SUPABASE_ANON_KEY"])
    session = (await user.auth.sign_in_with_password({"email": DEMO_USER_EMAIL, "password": PASSWORD})).session
    assert session is not None
    functions = AsyncFunctionsClient(hosted.functions_url, {"Authorization": f"Bearer {session.access_token}"},
                                     timeout=60)
    crm = httpx.Client(base_url=hosted.crm["CRM_URL"], headers={"X-API-Key": hosted.crm["CRM_API_KEY"]}, timeout=30)
    try:
        # Connect the organization's account to crm_server with the organization's own key...
        connected = await invoke(functions, "telegram-crm-connect", {
            "crmApiUrl": hosted.crm["CRM_URL"], "crmApiKey": hosted.project_key(), "crmPhoneNumber": ACCOUNT_PHONE,
            "name": "Support"})
        assert connected["status"] == "auth_required", connected
        integration_id = connected["integrationId"]
        assert connected["webhookUrl"].startswith(hosted.functions_url.removesuffix("/functions/v1"))

        # ...and log it in as the admin page does: the code the sandbox always sends.
        sent = await invoke(functions, "telegram-crm-auth", {"integrationId": integration_id, "step": "send-code"})
        assert sent["status"] == "code_sent", sent
        signed = await invoke(functions, "telegram-crm-auth", {
            "integrationId": integration_id, "step": "sign-in", "code": "12345"})
        assert signed["status"] == "authorized", signed

        # A Telegram user writes to the account; the message reaches the CRM, readable by the user under RLS.
        crm.post("/sandbox/users", json={"phone": USER_PHONE, "first_name": "Olga"}).raise_for_status()
        incoming = crm.post("/sandbox/incoming", json={"account_phone": ACCOUNT_PHONE, "from": USER_PHONE,
                                                       "text": "Is the blue one in stock?"})
        incoming.raise_for_status()
        try:
            row = await wait_for_row(user, integration_id)
        except AssertionError:
            raise AssertionError(hosted.logs()) from None
        assert (row["message_text"], row["external_message_id"]) == \
            ("Is the blue one in stock?", str(incoming.json()["message_id"]))

        # The manager replies through telegram-send; the Telegram user receives it.
        reply = await invoke(functions, "telegram-send", {"clientId": row["client_id"], "text": "Yes, we have it!"})
        assert reply["integrationId"] == integration_id and reply["provider"] == "telegram_crm", reply
        delivered = crm.get("/sandbox/sent", params={"account_phone": ACCOUNT_PHONE}).json()
        assert [message["text"] for message in delivered] == ["Yes, we have it!"]

        # The functions host counted what it served.
        metrics = httpx.get(f"{hosted.functions_url}/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"})
        assert 'functions_requests_total{function="telegram-send",method="POST",status_class="2xx"} 1.0' in \
            metrics.text
    finally:
        crm.close()
        await user.postgrest.aclose()
        await admin.postgrest.aclose()
