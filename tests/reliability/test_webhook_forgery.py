"""Forged webhooks against the running API process: a wrong secret, a signature of another body, a replayed old
timestamp, an unknown or another organization's key — all refused (401/404) and nothing stored.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from functions._shared import signature
from tests.reliability.stack import ReliabilityStack, Tenant

pytestmark = pytest.mark.slow


def _payload(organization_id: str, account_phone: str, text: str, message_id: int) -> dict[str, Any]:
    return {"event_id": f"evt_{uuid.uuid4().hex}", "project_id": organization_id,
            "account_phone": account_phone, "from_id": 700_000_001, "from_username": "mallory",
            "from_first_name": "Mallory", "from_last_name": None, "from_phone": None, "chat_id": 700_000_001,
            "message_id": message_id, "text": text, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _signed(secret: str, payload: dict[str, Any], *, header_secret: str | None = None, signing_secret: str | None = None,
            timestamp: int | None = None, signed_body: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers as crm_server sends them, with one part optionally forged."""
    body = json.dumps(payload).encode()
    sent_at = int(time.time()) if timestamp is None else timestamp
    event_id = str(payload["event_id"])
    return body, {
        "content-type": "application/json",
        "x-lovable-secret": secret if header_secret is None else header_secret,
        "webhook-id": event_id,
        "webhook-timestamp": str(sent_at),
        "webhook-signature": signature.sign(signing_secret or secret, event_id, sent_at,
                                            body if signed_body is None else signed_body),
    }


async def _stored(stack: ReliabilityStack, tenant: Tenant) -> dict[str, int]:
    pool = await stack.db()
    return {table: int(await pool.fetchval(f"SELECT count(*) FROM {table} WHERE organization_id = $1",
                                           tenant.organization_id))
            for table in ("chat_messages", "clients", "notifications")}


async def test_forged_webhooks_are_refused_and_store_nothing(stack: ReliabilityStack) -> None:
    tenant = await stack.tenant("Victim")
    other = await stack.tenant("Attacker")
    account = await stack.connect_account(tenant)
    other_account = await stack.connect_account(other)
    key, secret = await stack.integration_secret(account.integration_id)
    other_key, other_secret = await stack.integration_secret(other_account.integration_id)
    hook = f"{stack.functions_url}/telegram-crm-webhook"
    before = await _stored(stack, tenant)

    def payload(text: str) -> dict[str, Any]:
        return _payload(tenant.organization_id, account.phone.lstrip("+"), text, int(time.time() * 1000) % 10**9)

    genuine = payload("the real one")
    forgeries: list[tuple[str, str, bytes, dict[str, str], int]] = []

    def forge(name: str, query_key: str, body_and_headers: tuple[bytes, dict[str, str]], status: int) -> None:
        forgeries.append((name, query_key, *body_and_headers, status))

    forge("wrong secret, signed with it", key, _signed("not-the-secret-at-all", payload("a")), 401)
    forge("right header, signature by another secret", key,
          _signed(secret, payload("b"), signing_secret="another-secret-entirely"), 401)
    tampered = payload("c")
    forge("signature of another body", key,
          _signed(secret, tampered, signed_body=json.dumps({**tampered, "text": "harmless"}).encode()), 401)
    forge("replayed old timestamp", key, _signed(secret, payload("d"), timestamp=int(time.time()) - 3600), 401)
    forge("timestamp from the future", key, _signed(secret, payload("e"), timestamp=int(time.time()) + 3600), 401)
    forge("unknown webhook key", "k" * 32, _signed(secret, payload("f")), 404)
    forge("no webhook key", "", _signed(secret, payload("g")), 404)
    forge("another organization's key with our secret", other_key, _signed(secret, payload("h")), 401)
    forge("our key with the other organization's secret", key, _signed(other_secret, payload("i")), 401)
    # The other organization's own key and secret, claiming to be our project: refused, nothing crosses over.
    forge("other organization's credentials for our project", other_key, _signed(other_secret, payload("j")), 403)
    unsigned = json.dumps(payload("k")).encode()
    forge("unsigned with a wrong secret", key, (unsigned, {"content-type": "application/json",
                                                          "x-lovable-secret": secret[:-1] + "x"}), 401)
    # The secret itself, as an older crm_server sent it with every delivery (one observed delivery was enough to
    # forge any other): our server signs every delivery, so its integrations refuse anything unsigned.
    forge("unsigned with the right secret", key, (json.dumps(payload("l")).encode(),
                                                  {"content-type": "application/json", "x-lovable-secret": secret}),
          401)

    for name, query_key, body, headers, status in forgeries:
        response = await stack.http.post(hook, params={"key": query_key} if query_key else None, content=body,
                                         headers=headers)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        answer = response.json()
        assert answer["success"] is False and answer["code"] and answer["error"], name

    # A genuine delivery still works, and its replay (same event, now old or not) stores nothing new.
    body, headers = _signed(secret, genuine)
    accepted = await stack.http.post(hook, params={"key": key}, content=body, headers=headers)
    assert accepted.status_code == 200 and accepted.json()["duplicate"] is False, accepted.text
    replayed = await stack.http.post(hook, params={"key": key}, content=body, headers=headers)
    assert replayed.status_code == 200 and replayed.json()["duplicate"] is True

    after = await _stored(stack, tenant)
    assert after == {"chat_messages": before["chat_messages"] + 1, "clients": before["clients"] + 1,
                     "notifications": before["notifications"] + 1}
    pool = await stack.db()
    texts = [row["message_text"] for row in await pool.fetch(
        "SELECT message_text FROM chat_messages WHERE organization_id = ANY($1::uuid[])",
        [tenant.organization_id, other.organization_id])]
    assert texts == ["the real one"]
