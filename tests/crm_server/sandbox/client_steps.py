"""Steps the sandbox tests share: logging a real client in, and waiting for dispatched events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from telethon import TelegramClient, events

from crm_server.sandbox import LOGIN_CODE


async def log_in(client: TelegramClient, phone: str) -> None:
    """Connect and sign in with the sandbox's login code (no 2FA)."""
    if not client.is_connected():
        await client.connect()
    await client.send_code_request(phone)
    await client.sign_in(phone, LOGIN_CODE)


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Yield to the loop until `condition()` holds; events are dispatched in tasks, not inline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)



def collect_incoming(client: TelegramClient) -> list[events.NewMessage.Event]:
    """A list that fills with every incoming NewMessage event the client dispatches."""
    received: list[events.NewMessage.Event] = []

    async def on_message(event: events.NewMessage.Event) -> None:
        received.append(event)

    client.add_event_handler(on_message, events.NewMessage(incoming=True))
    return received
