"""How crm_server builds a TelegramClient: the options every account's client relies on, and its listener.

One factory for logins and stored sessions alike, so a client never runs with other options than the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from telethon import TelegramClient

from crm_server.settings import ServerSettings
from crm_server.telegram.session import StoreSession
from crm_server.telegram.states import AccountKey
from crm_server.telegram.updates import UpdateListener


class BoundedTelegramClient(TelegramClient):
    """A TelegramClient whose `connect()` ends, in a network failure (ConnectionError, TimeoutError) when Telegram
    does not answer.

    Telethon bounds only the TCP connect: the key exchange and the first request (`connect()` awaits GetConfig's
    answer) wait forever for a peer that accepts and then stays silent, which held the connection slot that every
    other account's start waits for. A peer that hangs up mid-handshake raised asyncio's IncompleteReadError, an
    EOFError that the callers' connection handling did not know.
    """

    def __init__(self, *args: Any, connect_bound_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connect_bound_seconds = connect_bound_seconds

    async def connect(self) -> None:
        try:
            await asyncio.wait_for(super().connect(), self._connect_bound_seconds)
        except TimeoutError:
            raise TimeoutError(f"Telegram did not answer within {self._connect_bound_seconds:g}s") from None
        except EOFError as exc:
            raise ConnectionError("Telegram closed the connection during the handshake") from exc


class ClientFactory:
    def __init__(self, settings: ServerSettings, updates: UpdateListener | None = None) -> None:
        self._settings = settings
        self._updates = updates

    @property
    def listening(self) -> bool:
        """Clients forward their incoming messages (a server); without a listener they only send (a CLI login)."""
        return self._updates is not None

    def build(self, session: StoreSession, key: AccountKey) -> TelegramClient:
        api_id, api_hash = self._settings.telegram_credentials()
        client = BoundedTelegramClient(
            session,
            api_id,
            api_hash,
            # A FloodWait must become our 429 with Retry-After, never a silent sleep inside a request.
            flood_sleep_threshold=0,
            # Load the stored update state so a restarted server fetches the updates it missed.
            catch_up=True,
            # Handlers run one after another in update order: the outbox gets a chat's messages in order,
            # and Telethon reads the next updates only after the previous ones were handled (see updates.py).
            sequential_updates=True,
            device_model="tgcrm crm_server",
            system_version="1.0",
            app_version="0.1.0",
            base_logger="telethon",
            connect_bound_seconds=self._settings.telegram_connect_timeout_seconds,
        )
        if self._updates is not None:
            # Before connect(): catch-up starts as soon as the client connects.
            self._updates.attach(client, session, key)
        return client


async def quiet_disconnect(client: TelegramClient) -> None:
    with contextlib.suppress(Exception):
        await client.disconnect()
