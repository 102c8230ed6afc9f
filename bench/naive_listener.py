"""The naive peer of the inbound bench (issue 17, item 6): the seed plan's design, a plain Telethon client whose
`NewMessage` handler awaits one `httpx.post` per message to telegram-crm-webhook, signed as crm_server signs a
single post, with no outbox, no retries and no per-chat order.

It runs in the bench process on the same sandbox world as crm_server: the world's SQLite file (the same users,
the account logged in through the same `auth.signIn`), opened a second time here, as the world allows another
process to. Its pushes reach the sessions of the process that writes the message, so the bench injects the naive
run's messages into this process's world (`inject`, one transaction per bulk as `POST /sandbox/incoming` does),
and Telethon receives them as the same updates crm_server's client would. A second crm_server mode would have
measured crm_server's HTTP stack again; this keeps the peer what the seed plan wrote: a handler and a post.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
from telethon import TelegramClient, events
from telethon.sessions import StringSession

from crm_server.sandbox import LOGIN_CODE, SandboxWorld, install, uninstall
from crm_server.sandbox.world import SimIncoming
from crm_server.webhooks.signature import delivery_headers


class NaiveListener:
    """One account's naive listener; `start()` logs it in, `inject()` has simulated users write to it."""

    def __init__(self, world_path: Path, *, phone: str, project_id: str, webhook_url: str, secret: str) -> None:
        self.world_path = world_path
        self.phone = phone
        self.project_id = project_id
        self.webhook_url = webhook_url
        self.secret = secret
        self.posted = 0
        self.failed = 0  # posts that did not answer 2xx: the seed plan drops them
        self._world: SandboxWorld | None = None
        self._client: TelegramClient | None = None
        # Every handler awaits its own post at once (Telethon runs handlers concurrently): no pool timeout, so the
        # queue for connections is measured rather than dropped.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, pool=None))

    async def start(self) -> NaiveListener:
        self._world = SandboxWorld(self.world_path)
        install(self._world)
        try:
            self._client = TelegramClient(StringSession(), 1, "x", flood_sleep_threshold=0)
        finally:
            uninstall()  # the client keeps its sandbox sender; nothing else in this process is rewired
        await self._client.connect()
        await self._client.send_code_request(self.phone)
        await self._client.sign_in(self.phone, LOGIN_CODE)
        self._client.add_event_handler(self._on_message, events.NewMessage(incoming=True))
        return self

    def inject(self, messages: list[tuple[str, str]]) -> None:
        """(sender, text) pairs written to the account in one transaction; pushed to the client in order."""
        assert self._world is not None
        self._world.incoming_many([SimIncoming(self.phone, sender, text) for sender, text in messages])

    async def _on_message(self, event: Any) -> None:
        if not event.is_private:
            return
        message = event.message
        sender = await event.get_sender()
        phone = getattr(sender, "phone", None)
        identity = f"{self.project_id}:{self.phone}:{event.chat_id}:{message.id}"
        payload = {
            "type": "message", "event_id": "evt_" + hashlib.sha256(identity.encode()).hexdigest()[:32],
            "project_id": self.project_id, "account_phone": self.phone, "from_id": event.sender_id,
            "from_username": getattr(sender, "username", None),
            "from_first_name": getattr(sender, "first_name", None),
            "from_last_name": getattr(sender, "last_name", None), "from_phone": f"+{phone}" if phone else None,
            "chat_id": event.chat_id, "message_id": message.id, "text": message.message or "",
            "timestamp": message.date.isoformat().replace("+00:00", "Z"),
        }
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = delivery_headers(self.secret, payload["event_id"], int(time.time()), body, with_secret=False)
        try:
            response = await self._http.post(self.webhook_url, content=body, headers=headers)
        except httpx.HTTPError:
            self.failed += 1
            return
        if response.is_success:
            self.posted += 1
        else:
            self.failed += 1

    async def close(self) -> None:
        if self._client is not None:
            await self._client.disconnect()
            self._client = None
        await self._http.aclose()
        if self._world is not None:
            self._world.close()
            self._world = None
