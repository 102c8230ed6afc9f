"""The tenancy matrix: three organizations, each with its own crm_server key, account, integrations, clients and
messages; every route of crm_server, the functions and the REST API is called by each organization with each other
organization's ids and keys. Every call is denied, no answer carries the other's data, and nothing changes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.reliability.stack import Account, ReliabilityStack, Tenant

pytestmark = pytest.mark.slow

ORGANIZATIONS = 3


@dataclass(frozen=True)
class Organization:
    tenant: Tenant
    crm_key: str  # crm_server API key bound to this organization's project
    account: Account
    webhook_key: str
    webhook_secret: str
    wappi_integration_id: str
    client_id: str
    user_phone: str  # the simulated Telegram user who wrote to the account
    message_text: str
    dead_letter_id: int

    @property
    def id(self) -> str:
        return self.tenant.organization_id

    def secrets(self) -> list[str]:
        return [self.crm_key, self.webhook_key, self.webhook_secret, f"wappi-token-{self.id}", self.message_text]


async def _organization(stack: ReliabilityStack, index: int) -> Organization:
    tenant = await stack.tenant(f"Tenant{index}")
    crm_key = await asyncio.to_thread(stack.project_key, tenant.organization_id)
    account = await stack.connect_account(tenant, crm_key=crm_key)
    webhook_key, webhook_secret = await stack.integration_secret(account.integration_id)
    saved = await stack.http.post(f"{stack.functions_url}/telegram-integration-save", headers=tenant.auth, json={
        "provider": "wappi", "profileId": f"profile-{index}", "apiToken": f"wappi-token-{tenant.organization_id}"})
    assert saved.status_code == 200, saved.text

    text = f"private message of tenant {index} {time.time_ns()}"
    _, user_phone, client_id = await stack.client_who_wrote(tenant, account.phone, text, timeout=30,
                                                            first_name=f"Customer{index}")
    pool = await stack.db()

    # A dead letter of this organization: its webhook refuses while the integration is disabled.
    await pool.execute("UPDATE messenger_integrations SET is_enabled = false WHERE id = $1", account.integration_id)
    await stack.crm_ok("POST", "/sandbox/incoming", json={"account_phone": account.phone, "from": user_phone,
                                                           "text": "refused while disabled"})
    dead_letter_id = 0
    deadline = time.monotonic() + 30
    while not dead_letter_id:
        dead = await stack.crm_ok("GET", "/webhooks/deliveries", key=crm_key,
                                  params={"project_id": tenant.organization_id, "state": "failed"})
        dead_letter_id = dead["deliveries"][0]["id"] if dead["deliveries"] else 0
        assert time.monotonic() < deadline, "no dead letter"
        await asyncio.sleep(0.1)
    await pool.execute("UPDATE messenger_integrations SET is_enabled = true WHERE id = $1", account.integration_id)
    return Organization(tenant, crm_key, account, webhook_key, webhook_secret, str(saved.json()["integrationId"]),
                        client_id, user_phone, text, dead_letter_id)


async def _snapshot(stack: ReliabilityStack, organization: Organization) -> dict[str, Any]:
    """Everything of one organization that another could read or change, on every side."""
    pool = await stack.db()
    tables = {}
    for table in ("organizations", "profiles", "clients", "chat_messages", "messenger_integrations", "notifications"):
        column = "id" if table == "organizations" else "organization_id"
        rows = await pool.fetch(f"SELECT * FROM {table} WHERE {column} = $1 ORDER BY id", organization.id)
        tables[table] = [json.dumps(dict(row), default=str, sort_keys=True) for row in rows]
    status = await stack.crm_ok("GET", "/telegram/status", params={"project_id": organization.id})
    for account in status["accounts"]:
        # Timestamps of the delivery health move with time, not with anyone's request.
        if account.get("webhook"):
            account["webhook"].pop("last_success_at", None)
    deliveries = await stack.crm_ok("GET", "/webhooks/deliveries", params={"project_id": organization.id,
                                                                          "state": "failed"})
    return {"tables": tables, "crm_status": status, "dead_letters": [d["id"] for d in deliveries["deliveries"]],
            "telegram_sent": stack.world().sent(organization.account.phone)}


Probe = tuple[str, Callable[[], Awaitable[httpx.Response]], set[int]]


def _probes(stack: ReliabilityStack, me: Organization, other: Organization) -> list[Probe]:
    """Every route, called by `me` (my keys and token) with `other`'s ids and keys; the statuses that mean denied."""
    crm, http, fn = stack.crm_call, stack.http, stack.functions_url
    key = me.crm_key
    victim, phone = other.id, other.account.phone
    forbidden = {403}
    probes: list[Probe] = [
        # crm_server: my key, the other project's data.
        ("crm connect", lambda: crm("POST", "/integration/lovable/connect", key=key, json={
            "project_id": victim, "phone": phone, "webhook_url": "http://127.0.0.1:9/steal"}), forbidden),
        ("crm send", lambda: crm("POST", "/telegram/send", key=key, json={
            "project_id": victim, "phone": phone, "to": other.user_phone, "text": "from a stranger"}), forbidden),
        ("crm send from their account in my project", lambda: crm("POST", "/telegram/send", key=key, json={
            "project_id": me.id, "phone": phone, "to": other.user_phone, "text": "from a stranger"}), {404}),
        ("crm status", lambda: crm("GET", "/telegram/status", key=key, params={"project_id": victim}), forbidden),
        ("crm status of their phone", lambda: crm("GET", "/telegram/status", key=key, params={
            "project_id": victim, "phone": phone}), forbidden),
        ("crm send-code", lambda: crm("POST", "/telegram/auth/send-code", key=key, json={
            "project_id": victim, "phone": phone}), forbidden),
        ("crm sign-in", lambda: crm("POST", "/telegram/auth/sign-in", key=key, json={
            "project_id": victim, "phone": phone, "code": "12345"}), forbidden),
        ("crm password", lambda: crm("POST", "/telegram/auth/password", key=key, json={
            "project_id": victim, "phone": phone, "password": "guess"}), forbidden),
        ("crm logout", lambda: crm("DELETE", f"/telegram/accounts/{phone}", key=key, params={
            "project_id": victim}), forbidden),
        ("crm logout their phone in my project", lambda: crm("DELETE", f"/telegram/accounts/{phone}", key=key,
                                                             params={"project_id": me.id}), {404}),
        *[(f"crm deliveries {state}", lambda state=state: crm("GET", "/webhooks/deliveries", key=key, params={
            "project_id": victim, "state": state}), forbidden) for state in ("failed", "pending", "delivered")],
        ("crm retry their dead letter", lambda: crm("POST", f"/webhooks/deliveries/{other.dead_letter_id}/retry",
                                                    key=key), {404}),
        # The sandbox's control routes need the admin key: a project key is refused.
        ("sandbox users", lambda: crm("POST", "/sandbox/users", key=key, json={"phone": "+15550000001"}), forbidden),
        ("sandbox accounts", lambda: crm("POST", "/sandbox/accounts", key=key, json={"phone": phone}), forbidden),
        ("sandbox incoming", lambda: crm("POST", "/sandbox/incoming", key=key, json={
            "account_phone": phone, "from": other.user_phone, "text": "forged"}), forbidden),
        ("sandbox sent", lambda: crm("GET", "/sandbox/sent", key=key, params={"account_phone": phone}), forbidden),
        ("sandbox flood", lambda: crm("POST", "/sandbox/flood", key=key, json={"account_phone": phone,
                                                                             "seconds": 60}), forbidden),
        ("sandbox revoke", lambda: crm("POST", "/sandbox/revoke", key=key, json={"account_phone": phone}), forbidden),
        ("sandbox requests", lambda: crm("GET", "/sandbox/requests", key=key), forbidden),
    ]
    auth = me.tenant.auth

    def function(name: str, body: dict[str, Any], statuses: set[int] | None = None,
                 method: str = "POST") -> Probe:
        if method == "GET":
            return (f"function {name} GET", lambda: http.get(f"{fn}/{name}", headers=auth, params=body),
                    statuses or {404})
        return (f"function {name} {sorted(body)}", lambda: http.post(f"{fn}/{name}", headers=auth, json=body),
                statuses or {404})

    probes += [
        # functions: my user's token, the other organization's ids and keys.
        function("telegram-crm-connect", {"crmApiUrl": stack.crm.url, "crmApiKey": me.crm_key,
                                          "crmPhoneNumber": other.account.phone,
                                          "integrationId": other.account.integration_id}),
        # Their crm_server key for my organization: crm_server refuses it for my project, nothing is saved.
        function("telegram-crm-connect", {"crmApiUrl": stack.crm.url, "crmApiKey": other.crm_key,
                                          "crmPhoneNumber": other.account.phone}, {502}),
        function("telegram-crm-send", {"clientId": other.client_id, "text": "x"}),
        function("telegram-crm-send", {"clientId": me.client_id, "text": "x",
                                       "integrationId": other.account.integration_id}),
        function("telegram-send", {"clientId": other.client_id, "text": "x"}),
        function("telegram-send", {"clientId": me.client_id, "text": "x",
                                   "integrationId": other.account.integration_id}),
        function("telegram-send", {"clientId": me.client_id, "text": "x",
                                   "integrationId": other.wappi_integration_id}),
        function("telegram-crm-status", {"integrationId": other.account.integration_id}),
        function("telegram-crm-status", {"integrationId": other.account.integration_id}, method="GET"),
        *[function("telegram-crm-auth", {"integrationId": other.account.integration_id, "step": step, "code": "12345",
                                         "password": "guess", "loginId": "A" * 32})
          for step in ("send-code", "sign-in", "password", "qr", "qr-status")],
        function("telegram-crm-sandbox", {"integrationId": other.account.integration_id, "fromPhone": "+15550000002",
                                          "text": "forged"}),
        function("telegram-integration-save", {"provider": "wappi", "integrationId": other.wappi_integration_id,
                                               "profileId": "stolen", "apiToken": "stolen"}),
        ("webhook: my key, their project", lambda: _webhook(stack, me.webhook_key, me.webhook_secret, other), {403}),
        ("webhook: their key, my secret", lambda: _webhook(stack, other.webhook_key, me.webhook_secret, other),
         {401}),
    ]
    # REST: my user's JWT (anon key) against the other organization's rows — RLS shows nothing, changes nothing.
    rest = f"{stack.api.url}/rest/v1"
    rest_headers = {"apikey": stack.keys.anon_key, **auth}
    for table, column in (("organizations", "id"), ("profiles", "organization_id"), ("clients", "organization_id"),
                          ("chat_messages", "organization_id"), ("messenger_integrations", "organization_id"),
                          ("notifications", "organization_id")):
        probes.append((f"rest read {table}", lambda table=table, column=column: http.get(
            f"{rest}/{table}", headers=rest_headers, params={column: f"eq.{victim}", "select": "id"}), {200}))
    probes += [
        ("rest update their client", lambda: http.patch(f"{rest}/clients", headers={**rest_headers,
                                                        "Prefer": "return=representation"},
                                                        params={"id": f"eq.{other.client_id}"},
                                                        json={"name": "renamed"}), {200}),
        ("rest delete their messages", lambda: http.delete(f"{rest}/chat_messages", headers={
            **rest_headers, "Prefer": "return=representation"}, params={"organization_id": f"eq.{victim}"}), {200}),
        ("rest insert into their organization", lambda: http.post(f"{rest}/chat_messages", headers=rest_headers,
                                                                  json={"organization_id": victim,
                                                                        "client_id": other.client_id,
                                                                        "message_type": "client",
                                                                        "message_text": "forged"}), {401, 403}),
        ("rest rpc ingest", lambda: http.post(f"{rest}/rpc/ingest_telegram_message", headers=rest_headers, json={
            "p_organization_id": victim, "p_integration_id": other.account.integration_id,
            "p_telegram_user_id": "1", "p_message_text": "forged"}), {401, 403, 404}),
    ]
    return probes


async def _webhook(stack: ReliabilityStack, key: str, secret: str, target: Organization) -> httpx.Response:
    from functions._shared import signature

    payload = {"event_id": f"evt_{time.time_ns()}", "project_id": target.id,
               "account_phone": target.account.phone.lstrip("+"), "from_id": 900_000_001, "from_username": "x",
               "chat_id": 900_000_001, "message_id": time.time_ns() % 10**9, "text": "forged",
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    body = json.dumps(payload).encode()
    sent_at = int(time.time())
    return await stack.http.post(f"{stack.functions_url}/telegram-crm-webhook", params={"key": key}, content=body,
                                 headers={"content-type": "application/json", "x-lovable-secret": secret,
                                          "webhook-id": payload["event_id"], "webhook-timestamp": str(sent_at),
                                          "webhook-signature": signature.sign(secret, payload["event_id"], sent_at,
                                                                              body)})


async def test_every_route_denies_every_other_organization(stack: ReliabilityStack) -> None:
    organizations = [await _organization(stack, index) for index in range(ORGANIZATIONS)]
    before = {organization.id: await _snapshot(stack, organization) for organization in organizations}

    failures: list[str] = []
    calls = 0
    for me in organizations:
        for other in organizations:
            if other is me:
                continue
            for name, call, denied in _probes(stack, me, other):
                calls += 1
                response = await call()
                where = f"{me.tenant.user_id[:8]} -> {other.id[:8]}: {name}"
                if response.status_code not in denied:
                    failures.append(f"{where}: {response.status_code} {response.text[:200]}")
                    continue
                text = response.text
                if name.startswith("rest ") and response.status_code == 200:
                    if json.loads(text) != []:
                        failures.append(f"{where}: RLS let rows through: {text[:200]}")
                elif response.status_code >= 400:
                    answer = response.json()
                    if answer.get("success", False) is not False and not name.startswith("rest "):
                        failures.append(f"{where}: not the error shape: {text[:200]}")
                leaked = [secret for secret in other.secrets() if secret in text]
                if leaked or other.client_id in text or other.account.integration_id in text:
                    failures.append(f"{where}: the answer carries the other organization's data: {text[:200]}")
    assert not failures, f"{len(failures)} of {calls} cross-organization calls were not denied:\n" + "\n".join(
        failures)
    assert calls >= ORGANIZATIONS * (ORGANIZATIONS - 1) * 45

    # Nothing changed anywhere: database rows, crm_server's view of each account, dead letters, Telegram.
    after = {organization.id: await _snapshot(stack, organization) for organization in organizations}
    for organization in organizations:
        assert after[organization.id] == before[organization.id], f"organization {organization.id} changed"


async def test_a_planted_row_cannot_make_another_organizations_next_message_a_duplicate(
        stack: ReliabilityStack) -> None:
    """The attack of issue 14: organization A's user plants, through REST, rows carrying B's integration and the
    redelivery key of B's next Telegram message. Each row naming B's integration is refused exactly as an unknown id
    is (nothing tells A that B's integration exists); a row of A's own with the same key is A's business only. B's
    next message is stored, not answered as a duplicate."""
    attacker, victim = await stack.tenant("Attacker"), await stack.tenant("Victim")
    account = await stack.connect_account(victim)
    _, user_phone, _ = await stack.client_who_wrote(victim, account.phone, "first", timeout=30)
    pool = await stack.db()
    first = await pool.fetchrow("SELECT external_account, external_chat_id, external_message_id FROM chat_messages "
                                "WHERE organization_id = $1 AND NOT is_outgoing", victim.organization_id)
    rest = f"{stack.api.url}/rest/v1"
    headers = {"apikey": stack.keys.anon_key, **attacker.auth}
    own_client = await stack.http.post(f"{rest}/clients", headers={**headers, "Prefer": "return=representation"},
                                       json={"organization_id": attacker.organization_id, "name": "decoy"})
    assert own_client.status_code == 201, own_client.text
    # Telegram numbers an account's messages in sequence: B's next messages are the ids right after the first.
    next_ids = [str(int(first["external_message_id"]) + step) for step in range(1, 11)]

    def planted(integration_id: str | None) -> list[dict[str, Any]]:
        return [{"organization_id": attacker.organization_id, "client_id": own_client.json()[0]["id"],
                 "integration_id": integration_id, "message_type": "client", "is_outgoing": False,
                 "message_text": "planted", "external_message_id": message_id,
                 "external_account": first["external_account"], "external_chat_id": first["external_chat_id"]}
                for message_id in next_ids]

    def without_ids(response: httpx.Response, named: str) -> tuple[int, str]:
        return response.status_code, response.text.replace(named, "<id>")

    unknown_id = str(uuid.uuid4())
    with_theirs = await stack.http.post(f"{rest}/chat_messages", headers=headers, json=planted(account.integration_id))
    with_unknown = await stack.http.post(f"{rest}/chat_messages", headers=headers, json=planted(unknown_id))
    assert with_theirs.status_code == 409 and with_theirs.json()["code"] == "23503", with_theirs.text
    assert without_ids(with_theirs, account.integration_id) == without_ids(with_unknown, unknown_id)
    own_key = await stack.http.post(f"{rest}/chat_messages", headers=headers, json=planted(None))
    assert own_key.status_code == 201, own_key.text

    await stack.crm_ok("POST", "/sandbox/incoming", json={"account_phone": account.phone, "from": user_phone,
                                                           "text": "second"})
    assert await stack.wait_for_incoming(victim.organization_id, 2, timeout=30) == 2
    stored = await stack.incoming_rows(victim.organization_id)
    assert sorted(row["message_text"] for row in stored) == ["first", "second"]
    assert {row["external_message_id"] for row in stored} - {first["external_message_id"]} <= set(next_ids)
    assert await pool.fetchval("SELECT count(*) FROM chat_messages WHERE integration_id = $1 AND organization_id <> $2",
                               account.integration_id, victim.organization_id) == 0
