"""Outgoing messages under a crm_server restart: clients retry telegram-send with the same Idempotency-Key until it
answers, and every message reaches Telegram once and is stored once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest

from tests.reliability.stack import ReliabilityStack

pytestmark = pytest.mark.slow

SENDS = 500
CLIENTS = 10
CONCURRENCY = 8


async def test_sends_retried_across_a_crm_server_restart_reach_telegram_once_and_are_stored_once(
        stack: ReliabilityStack) -> None:
    tenant = await stack.tenant("Outbound")
    account = await stack.connect_account(tenant)
    # The clients write first, so the CRM knows them (and the account knows their Telegram ids).
    senders = [phone for _, phone in await asyncio.gather(
        *(stack.sandbox_user(first_name=f"Client{index}") for index in range(CLIENTS)))]
    for phone in senders:
        await stack.crm_ok("POST", "/sandbox/incoming", json={"account_phone": account.phone, "from": phone,
                                                               "text": "hello"})
    assert await stack.wait_for_incoming(tenant.organization_id, CLIENTS, timeout=60) == CLIENTS
    pool = await stack.db()
    client_ids = [str(row["id"]) for row in await pool.fetch(
        "SELECT id FROM clients WHERE organization_id = $1 ORDER BY id", tenant.organization_id)]
    assert len(client_ids) == CLIENTS

    texts = [f"reply #{index}" for index in range(SENDS)]
    attempts: Counter[int] = Counter()
    answered: dict[int, dict[str, object]] = {}
    restarted = asyncio.Event()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(SENDS):
        queue.put_nowait(index)

    async def send(index: int) -> None:
        """One CRM user's send, retried with the same key until the function answers 200."""
        body = {"clientId": client_ids[index % CLIENTS], "text": texts[index]}
        headers = {**tenant.auth, "Idempotency-Key": f"reliability-send-{index}"}
        deadline = time.monotonic() + 120
        while True:
            attempts[index] += 1
            try:
                response = await stack.http.post(f"{stack.functions_url}/telegram-send", json=body, headers=headers,
                                                 timeout=30)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                answered[index] = response.json()
                return
            if response is not None:
                # Only "try again later" answers are expected while crm_server restarts.
                assert response.status_code in (429, 502, 503, 504), response.text
            assert time.monotonic() < deadline, f"send {index} never succeeded"
            await asyncio.sleep(0.2)

    async def client() -> None:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await send(index)
            if len(answered) >= SENDS // 2 and not restarted.is_set():
                restarted.set()
                # Mid-stream: the others keep sending while it goes down and comes back.
                await asyncio.to_thread(stack.restart_crm)

    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    assert restarted.is_set() and stack.crm.starts >= 2
    assert sum(attempts.values()) > SENDS, "no send had to be retried: the restart did not bite"

    # Telegram got each message once...
    delivered = Counter(text for _, text in stack.world().sent(account.phone))
    assert {text: delivered[text] for text in texts} == {text: 1 for text in texts}
    # ...and the CRM stored each once, under its key, with the id Telegram gave it.
    rows = await pool.fetch("SELECT idempotency_key, message_text, external_message_id FROM chat_messages "
                            "WHERE organization_id = $1 AND is_outgoing", tenant.organization_id)
    assert len(rows) == SENDS
    assert Counter(row["message_text"] for row in rows) == Counter(texts)
    assert {row["idempotency_key"] for row in rows} == {f"reliability-send-{index}" for index in range(SENDS)}
    assert {str(answer["savedMessageId"]) for answer in answered.values()} == {
        str(row) for row in await pool.fetchval(
            "SELECT array_agg(id) FROM chat_messages WHERE organization_id = $1 AND is_outgoing",
            tenant.organization_id)}
