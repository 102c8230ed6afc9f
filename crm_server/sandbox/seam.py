"""The one place that touches Telethon's private seam: the `MTProtoSender` name TelegramBaseClient builds from.
`install(world)` swaps in sandbox senders for every client created afterwards; `check_telethon_shape` fails loudly."""

from __future__ import annotations

import inspect
import threading
from typing import Any

from telethon import errors as telethon_errors
from telethon.client import telegrambaseclient
from telethon.crypto import AuthKey
from telethon.network import MTProtoSender
from telethon.tl import types

from crm_server.sandbox.errors import TelethonShapeError
from crm_server.sandbox.handlers import RequestHandlers
from crm_server.sandbox.sender import SandboxSender
from crm_server.sandbox.world import SandboxWorld

# The keyword arguments TelegramBaseClient passes to MTProtoSender; SandboxSender accepts exactly these.
_SENDER_KWARGS = (
    "loggers",
    "retries",
    "delay",
    "auto_reconnect",
    "connect_timeout",
    "auth_key_callback",
    "updates_queue",
    "auto_reconnect_callback",
)
# What the client calls on its sender (and the keepalive loop on `_sender`), and what we borrow from it.
_SENDER_MEMBERS = (
    "connect",
    "disconnect",
    "is_connected",
    "send",
    "disconnected",
    "_transport_connected",
    "_keepalive_ping",
    "_store_own_updates",
)

_lock = threading.Lock()
_installed_world: SandboxWorld | None = None


def check_telethon_shape() -> None:
    """Raise TelethonShapeError naming what changed if Telethon no longer has the shape the sandbox relies on."""
    problems: list[str] = []
    current = getattr(telegrambaseclient, "MTProtoSender", None)
    if current is None:
        problems.append("telethon.client.telegrambaseclient no longer imports the name MTProtoSender")
    try:
        parameters = inspect.signature(MTProtoSender.__init__).parameters
    except (TypeError, ValueError):
        parameters = {}
    missing_kwargs = [name for name in ("auth_key", *_SENDER_KWARGS) if name not in parameters]
    if missing_kwargs:
        problems.append(f"MTProtoSender.__init__ lost parameters {missing_kwargs}")
    extra = [
        name
        for name, p in parameters.items()
        if name not in ("self", "auth_key", *_SENDER_KWARGS) and p.default is inspect.Parameter.empty
    ]
    if extra:
        problems.append(f"MTProtoSender.__init__ gained required parameters {extra}")
    missing_members = [name for name in _SENDER_MEMBERS if not hasattr(MTProtoSender, name)]
    if missing_members:
        problems.append(f"MTProtoSender lost members {missing_members}")
    try:
        client_init = inspect.getsource(telegrambaseclient.TelegramBaseClient.__init__)
    except (OSError, TypeError):
        client_init = ""
    if "self._sender = MTProtoSender(" not in client_init or "updates_queue=self._updates_queue" not in client_init:
        problems.append("TelegramBaseClient.__init__ no longer builds self._sender = MTProtoSender(updates_queue=)")
    if not callable(getattr(telethon_errors, "rpc_message_to_error", None)):
        problems.append("telethon.errors.rpc_message_to_error is gone")
    if not hasattr(types, "RpcError") or not hasattr(AuthKey(None), "key_id"):
        problems.append("telethon.tl.types.RpcError or AuthKey.key_id is gone")
    if problems:
        raise TelethonShapeError(
            "Telethon's shape changed; the sandbox seam (crm_server/sandbox/seam.py) needs updating: "
            + "; ".join(problems)
        )


def install(world: SandboxWorld) -> None:
    """Make every TelegramClient created from now on talk to `world` (replaces any previously installed world)."""
    check_telethon_shape()
    handlers = RequestHandlers(world)

    def sandbox_sender(auth_key: AuthKey | None, **kwargs: Any) -> SandboxSender:
        return SandboxSender(auth_key, world=world, handlers=handlers, **kwargs)

    global _installed_world
    with _lock:
        telegrambaseclient.MTProtoSender = sandbox_sender  # type: ignore[attr-defined, assignment]
        _installed_world = world


def uninstall() -> None:
    """Give clients created from now on Telethon's real MTProtoSender again (clients already built keep theirs)."""
    global _installed_world
    with _lock:
        telegrambaseclient.MTProtoSender = MTProtoSender  # type: ignore[attr-defined]
        _installed_world = None


def installed_world() -> SandboxWorld | None:
    """The world clients are currently wired to, or None when Telethon talks to the real network."""
    return _installed_world
