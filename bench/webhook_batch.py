"""telegram-crm-webhook, one event per POST against batches (the contract's "Batched delivery"): rows/s stored for
the same `events` incoming messages across `chats` chats, posted signed as crm_server posts them, on a stack of its
own (embedded PostgreSQL, the local API, the functions host; no crm_server: the integration is made in SQL).

A quick measurement for issue 17, not one of `make bench`'s: `python -m bench.webhook_batch [--events 10000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn

from functions._shared import signature
from functions._shared.settings import FunctionsSettings
from functions.host import create_standalone_app
from supabase_local.database import LocalDatabase
from supabase_local.keys import local_keys as make_local_keys
from tests.helpers.net import free_port, wait_http


def _serve(app: Any, port: int, name: str) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/health", expect_status=200)
    return server, thread


def _signed(secret: str, payload: dict[str, Any], webhook_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    sent_at = int(time.time())
    return body, {"content-type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": str(sent_at),
                  "webhook-signature": signature.sign(secret, webhook_id, sent_at, body)}


def _events(organization_id: str, phone: str, count: int, chats: int, base_user: int) -> list[dict[str, Any]]:
    return [{"event_id": str(uuid.uuid4()), "project_id": organization_id, "account_phone": phone,
             "from_id": base_user + number % chats, "from_username": f"user{base_user + number % chats}",
             "from_first_name": "Ivan", "from_last_name": "Petrov", "chat_id": base_user + number % chats,
             "message_id": 1000 + number, "text": f"message {number} of the bench",
             "timestamp": "2026-12-01T10:00:00Z"} for number in range(count)]


async def _organization(db: asyncpg.Pool, secret: str) -> tuple[str, str, str]:
    organization_id, key, phone = str(uuid.uuid4()), secrets.token_urlsafe(24), f"+1555{secrets.randbelow(10**7):07d}"
    await db.execute("INSERT INTO public.organizations (id, name) VALUES ($1, 'bench')", organization_id)
    settings = {"crmApiUrl": "http://127.0.0.1:1", "crmApiKey": "bench", "crmPhoneNumber": phone,
                "secret": secret, "signatureRequired": True}
    await db.execute("INSERT INTO public.messenger_integrations (organization_id, provider, name, webhook_key, "
                     "settings) VALUES ($1, 'telegram_crm', 'bench', $2, $3::jsonb)", organization_id, key,
                     json.dumps(settings))
    return organization_id, key, phone


async def _post_all(http: httpx.AsyncClient, key: str, secret: str, bodies: list[tuple[str, dict[str, Any]]],
                    concurrency: int) -> float:
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)

    async def poster() -> None:
        while not queue.empty():
            webhook_id, payload = queue.get_nowait()
            body, headers = _signed(secret, payload, webhook_id)
            response = await http.post(f"/telegram-crm-webhook?key={key}", content=body, headers=headers)
            response.raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(poster() for _ in range(concurrency)))
    return time.perf_counter() - started


async def measure(api_url: str, admin_url: str, functions_url: str, *, events: int, chats: int, batch: int,
                  single_concurrency: int, batch_concurrency: int) -> dict[str, float]:
    db = await asyncpg.create_pool(admin_url, min_size=1, max_size=2)
    assert db is not None
    figures: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(base_url=functions_url, timeout=120) as http:
            secret = secrets.token_urlsafe(32)
            # warm-up: the key cache, the connection pools and the rpcs' plans
            organization_id, key, phone = await _organization(db, secret)
            warm = _events(organization_id, phone, 200, 10, 10_000)
            await _post_all(http, key, secret, [(event["event_id"], event) for event in warm[:100]], 4)
            await _post_all(http, key, secret, [(str(uuid.uuid4()), {"batch_id": "w", "project_id": organization_id,
                                                                     "events": warm[100:]})], 1)

            organization_id, key, phone = await _organization(db, secret)
            single = _events(organization_id, phone, events, chats, 20_000)
            seconds = await _post_all(http, key, secret, [(event["event_id"], event) for event in single],
                                      single_concurrency)
            stored = await db.fetchval("SELECT count(*) FROM chat_messages WHERE organization_id = $1",
                                       organization_id)
            assert stored == events, stored
            figures["single_rows_per_s"] = events / seconds

            organization_id, key, phone = await _organization(db, secret)
            batched = _events(organization_id, phone, events, chats, 40_000)
            bodies = []
            for start in range(0, events, batch):
                batch_id = str(uuid.uuid4())
                bodies.append((batch_id, {"batch_id": batch_id, "project_id": organization_id,
                                          "account_phone": phone, "events": batched[start:start + batch]}))
            seconds = await _post_all(http, key, secret, bodies, batch_concurrency)
            stored = await db.fetchval("SELECT count(*) FROM chat_messages WHERE organization_id = $1",
                                       organization_id)
            assert stored == events, stored
            figures["batched_rows_per_s"] = events / seconds

            figures["ratio"] = figures["batched_rows_per_s"] / figures["single_rows_per_s"]

            # The rpc alone (no HTTP, no gateway, no Python per event): what the database does per batch.
            organization_id, key, phone = await _organization(db, secret)
            integration_id = await db.fetchval("SELECT id::text FROM messenger_integrations WHERE webhook_key = $1",
                                               key)
            alone = _events(organization_id, phone, events, chats, 60_000)
            rpc_batches = [[{"i": index, "kind": "message", "p_telegram_user_id": str(event["from_id"]),
                             "p_message_text": event["text"], "p_notification_title": "New Telegram message",
                             "p_notification_body": event["text"], "p_external_message_id": str(event["message_id"]),
                             "p_telegram_chat_id": str(event["chat_id"]), "p_account_phone": phone,
                             "p_telegram_username": event["from_username"], "p_first_name": "Ivan",
                             "p_last_name": "Petrov", "p_sent_at": event["timestamp"],
                             "p_metadata": {"source": "crm_server"}, "p_notify": True}
                            for index, event in enumerate(alone[start:start + batch])]
                           for start in range(0, events, batch)]
            async with db.acquire() as connection:
                started = time.perf_counter()
                for rpc_batch in rpc_batches:
                    await connection.fetchval("SELECT ingest_telegram_batch($1::uuid, $2::uuid, $3::jsonb)",
                                              organization_id, integration_id, json.dumps(rpc_batch))
                figures["rpc_alone_rows_per_s"] = events / (time.perf_counter() - started)
    finally:
        await db.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--chats", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--single-concurrency", type=int, default=16)
    parser.add_argument("--batch-concurrency", type=int, default=4)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-webhook-batch-") as directory:
        state = Path(directory)
        database = LocalDatabase(state, port=free_port(), durable=False)
        database.start()
        try:
            asyncio.run(database.prepare(seed=False))
            urls = database.urls()
            keys = make_local_keys(state)
            from supabase_local.api import create_api_app
            from supabase_local.rest.app import create_rest_app

            api_port, functions_port = free_port(), free_port()
            api, api_thread = _serve(create_api_app(create_rest_app(urls.authenticator, keys.jwt_secret),
                                        api_keys=(keys.anon_key, keys.service_role_key)), api_port, "api")
            api_url = f"http://127.0.0.1:{api_port}"
            settings = FunctionsSettings(supabase_url=api_url, supabase_service_role_key=keys.service_role_key,
                                         supabase_jwt_secret=keys.jwt_secret,
                                         functions_public_url=f"http://127.0.0.1:{functions_port}",
                                         crm_allow_http_loopback=True, max_request_bytes=8 * 1024 * 1024)
            functions, functions_thread = _serve(create_standalone_app(settings), functions_port, "functions")
            try:
                figures = asyncio.run(measure(
                    api_url, urls.admin, f"http://127.0.0.1:{functions_port}/functions/v1", events=options.events,
                    chats=options.chats, batch=options.batch, single_concurrency=options.single_concurrency,
                    batch_concurrency=options.batch_concurrency))
            finally:
                functions.should_exit = api.should_exit = True
                functions_thread.join(timeout=15)
                api_thread.join(timeout=15)
        finally:
            database.stop()
    print(f"{options.events} events over {options.chats} chats")
    print(f"  one per POST ({options.single_concurrency} at once): {figures['single_rows_per_s']:8.0f} rows/s")
    print(f"  {options.batch} per POST ({options.batch_concurrency} at once):  "
          f"{figures['batched_rows_per_s']:8.0f} rows/s")
    print(f"  ratio: {figures['ratio']:.1f}x")
    print(f"  the rpc alone, one connection: {figures['rpc_alone_rows_per_s']:8.0f} rows/s")
    print(json.dumps({"bench": "webhook_batch", **{name: round(value, 1) for name, value in figures.items()}}))


if __name__ == "__main__":
    main()
