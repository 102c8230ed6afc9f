"""`SandboxSender`: a drop-in for Telethon's MTProtoSender that talks to a SandboxWorld instead of a socket.
Requests, results and pushed updates cross it as TL bytes, so Telethon's own (de)serialisation and update code run."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telethon import utils
from telethon.crypto import AuthKey
from telethon.errors import rpc_message_to_error
from telethon.extensions import BinaryReader
from telethon.network import MTProtoSender
from telethon.tl import TLRequest, types

from crm_server.sandbox import render
from crm_server.sandbox.errors import RpcFailure
from crm_server.sandbox.handlers import RequestHandlers
from crm_server.sandbox.world import SandboxWorld, SimMessage, SimUpdate, SimUser

_log = logging.getLogger(__name__)

# Telethon's default DC for a new session; only used if the connection object does not say.
_DEFAULT_DC = 2


def _signed64(value: int) -> int:
    # Telethon exposes key ids unsigned; SQLite integers are signed 64-bit.
    return value - 2**64 if value >= 2**63 else value


class SandboxSender:
    """One connection of one TelegramClient to the sandbox.

    Same surface as `MTProtoSender` as TelegramBaseClient uses it. Each request is answered on the next loop
    iteration (`call_soon`), never inline: like a network, so `await client.send_message(...)` in a loop still
    lets other tasks (the update loop, HTTP handlers) run. Idle, it costs nothing: no tasks, no timers.
    """

    def __init__(
        self,
        auth_key: AuthKey | None,
        *,
        loggers: Any = None,
        retries: int = 5,
        delay: float = 1,
        auto_reconnect: bool = True,
        connect_timeout: float | None = None,
        auth_key_callback: Callable[[AuthKey], Awaitable[None]] | None = None,
        updates_queue: asyncio.Queue | None = None,
        auto_reconnect_callback: Callable[[], Awaitable[None]] | None = None,
        world: SandboxWorld,
        handlers: RequestHandlers | None = None,
    ) -> None:
        # Telethon keeps a reference to this exact AuthKey object (session.auth_key), so mutate, never replace.
        self.auth_key = auth_key or AuthKey(None)
        self._world = world
        self._handlers = handlers or RequestHandlers(world)
        self._auth_key_callback = auth_key_callback
        # `_updates_queue` is the name MTProtoSender._store_own_updates reads; exported senders have none.
        self._updates_queue = updates_queue
        self._connection: Any = None
        self._user_connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id = 0
        self._pending: set[asyncio.Future] = set()
        self._disconnected_future: asyncio.Future | None = None
        self._account_id: int | None = None
        self._revoked = False
        self.key_id = 0
        self.dc_id = _DEFAULT_DC
        self.address: tuple[str, int] = ("127.0.0.1", 443)

    # ------------------------------------------------------------ the MTProtoSender surface

    async def connect(self, connection: Any) -> bool:
        if self._user_connected:
            return False
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._connection = connection
        self.dc_id = getattr(connection, "_dc_id", None) or _DEFAULT_DC
        self.address = (getattr(connection, "_ip", None) or "127.0.0.1", getattr(connection, "_port", None) or 443)
        if not self.auth_key:
            # What the DH exchange would produce: 256 random bytes the server now knows as an unbound key.
            self.auth_key.key = os.urandom(256)
            if self._auth_key_callback is not None:
                await self._auth_key_callback(self.auth_key)
        self.key_id = _signed64(self.auth_key.key_id)
        owner = self._world.open_key(self.key_id)
        self._revoked = False
        self._user_connected = True
        self._disconnected_future = self._loop.create_future()
        if owner is not None:
            self._attach(owner)
        return True

    def is_connected(self) -> bool:
        return self._user_connected

    async def disconnect(self) -> None:
        self._close(error=None)

    def send(self, request: TLRequest | list[TLRequest], ordered: bool = False) -> Any:
        if not self._user_connected:
            raise ConnectionError("Cannot send requests while disconnected")
        if utils.is_list_like(request):
            return [self._enqueue(item) for item in request]  # type: ignore[union-attr]
        return self._enqueue(request)  # type: ignore[arg-type]

    @property
    def disconnected(self) -> asyncio.Future:
        if self._disconnected_future is None:
            # Never connected: already "disconnected", as MTProtoSender reports it.
            self._disconnected_future = asyncio.get_running_loop().create_future()
            self._disconnected_future.set_result(None)
        return asyncio.shield(self._disconnected_future)

    def _transport_connected(self) -> bool:
        # Read by the client's keepalive loop, which also saves the session every minute when this is True.
        return self._user_connected

    def _keepalive_ping(self, rnd_id: int) -> None:
        # There is no link to keep alive; answering nothing keeps idle clients free of traffic.
        return None

    # Reuse Telethon's own routing of results that carry updates (flagged _self_outgoing and queued),
    # so the message box sees our own pts moves exactly as with the real sender.
    # (getattr: if Telethon drops it, seam.check_telethon_shape reports that instead of an import error here.)
    _store_own_updates = getattr(MTProtoSender, "_store_own_updates", None)

    # ------------------------------------------------------------ requests

    def _enqueue(self, request: TLRequest) -> asyncio.Future:
        assert self._loop is not None
        future = self._loop.create_future()
        # Serialise now, as MTProtoSender does when packing: bad arguments fail in the caller, not later.
        payload = bytes(request)
        self._pending.add(future)
        self._loop.call_soon(self._answer, request, payload, future)
        return future

    def _answer(self, request: TLRequest, payload: bytes, future: asyncio.Future) -> None:
        self._pending.discard(future)
        if future.done():  # cancelled, or failed by a disconnect meanwhile
            return
        try:
            # The handlers see what Telegram would: the request as decoded from its bytes.
            result = self._handlers.handle(BinaryReader(payload).tgread_object(), self)
            parsed = request.read_result(BinaryReader(render.result_bytes(result)))
        except RpcFailure as failure:
            rpc_error = types.RpcError(error_code=failure.code, error_message=failure.message)
            error = rpc_message_to_error(rpc_error, request)
            future.set_exception(error)
            if self._revoked and failure.code == 401:
                # A terminated session's connection dies after telling the client, as with Telegram:
                # `client.disconnected` then raises AuthKeyUnregisteredError for whoever watches it.
                self._close(error)
            return
        except Exception as exc:  # a sandbox bug: surface it to the caller rather than hang
            _log.exception("sandbox failed to answer %s", type(request).__name__)
            future.set_exception(exc)
            return
        self._store_own_updates(parsed)
        future.set_result(parsed)

    # ------------------------------------------------------------ login binding (handlers.Session)

    def bind(self, account_id: int) -> None:
        self._world.bind_key(self.key_id, account_id)
        self._revoked = False
        self._attach(account_id)

    def unbind(self) -> None:
        # Detached first: a watcher that saw the key unbound while still attached would take it for a revocation.
        self._detach()
        self._world.unbind_key(self.key_id)

    def _attach(self, account_id: int) -> None:
        self._detach()
        self._account_id = account_id
        self._world.attach(account_id, self)

    def _detach(self) -> None:
        if self._account_id is not None:
            self._world.detach(self._account_id, self)
            self._account_id = None

    # ------------------------------------------------------------ pushes from the world (world.UpdateListener)

    def on_new_message(self, message: SimMessage, peer: SimUser, peer_known: bool) -> None:
        self._from_any_thread(self._push_new_message, message, peer, peer_known)

    def on_other_update(self, update: SimUpdate) -> None:
        self._from_any_thread(self._push_other_update, update)

    def on_revoked(self) -> None:
        # The next request gets 401 and then the connection closes. An idle client sends nothing, so nudge
        # its update loop with UpdatesTooLong: Telethon asks for a difference, which is that next request.
        self._account_id = None
        self._revoked = True
        self._from_any_thread(self._push, types.UpdatesTooLong())

    def on_login_token(self) -> None:
        # A phone accepted the QR login token this session exported (crm_server.sandbox.qr_login).
        self._from_any_thread(self._push, types.UpdateShort(update=types.UpdateLoginToken(), date=int(time.time())))

    def on_dropped(self) -> None:
        self._account_id = None
        self._from_any_thread(self._close, ConnectionError("sandbox: connection dropped"))

    def _from_any_thread(self, callback: Callable[..., None], *args: Any) -> None:
        if not self._user_connected or self._loop is None:
            return
        if threading.get_ident() == self._thread_id:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    def _push_new_message(self, message: SimMessage, peer: SimUser, peer_known: bool) -> None:
        self._push(render.new_message_updates(self._world, message, peer, peer_known, self.dc_id))

    def _push_other_update(self, update: SimUpdate) -> None:
        self._push(render.pushed_other_update(self._world, update, self.dc_id))

    def _push(self, updates: types.TypeUpdates) -> None:
        if not self._user_connected or self._updates_queue is None:
            return
        # Through bytes, like everything from the server: each session gets its own decoded object.
        self._updates_queue.put_nowait(BinaryReader(bytes(updates)).tgread_object())

    # ------------------------------------------------------------ teardown

    def _close(self, error: Exception | None) -> None:
        if not self._user_connected:
            return
        self._user_connected = False
        self._detach()
        for future in self._pending:
            if future.done():
                continue
            if error is None:
                future.cancel()
            else:
                future.set_exception(error)
        self._pending.clear()
        done = self._disconnected_future
        if done is not None and not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
