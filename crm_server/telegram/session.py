"""A Telethon session kept in the crm_server store: auth key, DC, update state and entity cache.

Telethon mutates sessions synchronously from inside its loops, so changes are buffered here and flushed
to the store asynchronously (debounced), and once more when the client disconnects.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from telethon.crypto import AuthKey
from telethon.sessions import MemorySession
from telethon.tl.types.updates import State

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

Persist = Callable[[bytes], Awaitable[None]]


class StoreSession(MemorySession):
    """MemorySession plus (de)serialization and write-behind persistence through `persist`.

    Persistence starts switched off for a login in progress: an unauthorized key is not worth keeping,
    and writing it would make a half-finished login look like a stored account.
    """

    def __init__(self, persist: Persist | None = None, *, debounce_seconds: float = 0.5) -> None:
        super().__init__()
        self._persist = persist
        self._debounce_seconds = debounce_seconds
        self._dirty = False
        self._flush_task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        # When gated, Telethon's own saves of the account's update state are ignored: only states the
        # AccountManager knows to be covered by the outbox are kept (set_safe_update_state).
        self._update_state_gated = False

    # --- serialization --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        states = {
            str(entity_id): [state.pts, state.qts, int(state.date.timestamp()), state.seq, state.unread_count]
            for entity_id, state in self._update_states.items()
        }
        document = {
            "v": FORMAT_VERSION,
            "dc_id": self._dc_id,
            "server_address": self._server_address,
            "port": self._port,
            "auth_key": base64.b64encode(self._auth_key.key).decode() if self._auth_key else None,
            "takeout_id": self._takeout_id,
            "update_states": states,
            "entities": sorted(self._entities, key=lambda row: row[0]),
        }
        return json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, persist: Persist | None = None) -> "StoreSession":
        document = json.loads(data)
        if document.get("v") != FORMAT_VERSION:
            raise ValueError(f"unsupported session format {document.get('v')!r}")
        session = cls(persist)
        session._dc_id = document["dc_id"] or 0
        session._server_address = document["server_address"]
        session._port = document["port"]
        if document["auth_key"]:
            session._auth_key = AuthKey(base64.b64decode(document["auth_key"]))
        session._takeout_id = document["takeout_id"]
        for entity_id, (pts, qts, date, seq, unread) in document["update_states"].items():
            session._update_states[int(entity_id)] = State(
                pts=pts,
                qts=qts,
                date=datetime.datetime.fromtimestamp(date, tz=datetime.timezone.utc),
                seq=seq,
                unread_count=unread,
            )
        session._entities = {tuple(row) for row in document["entities"]}
        return session

    # --- persistence ----------------------------------------------------------------------------

    def enable_persistence(self, persist: Persist) -> None:
        self._persist = persist
        self._dirty = True

    def disable_persistence(self) -> None:
        self._persist = None
        self._dirty = False
        if self._flush_task is not None:
            self._flush_task.cancel()
            self._flush_task = None

    def _changed(self) -> None:
        self._dirty = True
        if self._persist is None or self._flush_task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (construction time): the next flush or close() writes it
        self._flush_task = loop.create_task(self._flush_after_debounce())

    async def _flush_after_debounce(self) -> None:
        try:
            await asyncio.sleep(self._debounce_seconds)
        finally:
            self._forget_flush_task()
        await self.flush()

    def _forget_flush_task(self) -> None:
        # Only the task that is current may clear the slot: close() may have replaced it meanwhile.
        if self._flush_task is asyncio.current_task():
            self._flush_task = None

    async def flush(self) -> None:
        """Write the session to the store now if anything changed since the last write."""
        async with self._flush_lock:
            if not self._dirty or self._persist is None:
                return
            self._dirty = False
            try:
                await self._persist(self.to_bytes())
            except Exception as exc:
                self._dirty = True
                # Only the exception type: its text could quote the SQL parameters, i.e. the encrypted session.
                log.warning("could not persist a Telegram session (%s); will retry", type(exc).__name__)
                if self._persist is not None and self._flush_task is None:
                    self._flush_task = asyncio.get_running_loop().create_task(self._flush_after_debounce())

    # --- Telethon's Session interface: every mutation marks the session dirty --------------------

    def set_dc(self, dc_id: int, server_address: str, port: int) -> None:
        super().set_dc(dc_id, server_address, port)
        self._changed()

    @property
    def auth_key(self) -> AuthKey | None:
        return self._auth_key

    @auth_key.setter
    def auth_key(self, value: AuthKey | None) -> None:
        old = self._auth_key.key if self._auth_key else None
        new = value.key if value else None
        self._auth_key = value
        if old != new:
            self._changed()

    @property
    def takeout_id(self) -> int | None:
        return self._takeout_id

    @takeout_id.setter
    def takeout_id(self, value: int | None) -> None:
        self._takeout_id = value
        self._changed()

    def set_update_state(self, entity_id: int, state: Any) -> None:
        if entity_id == 0 and self._update_state_gated:
            return
        self._store_update_state(entity_id, state)

    def gate_update_state(self) -> None:
        self._update_state_gated = True

    def set_safe_update_state(self, state: Any) -> None:
        if state.pts > 0:
            self._store_update_state(0, state)

    def _store_update_state(self, entity_id: int, state: Any) -> None:
        if self._update_states.get(entity_id) == state:
            return
        super().set_update_state(entity_id, state)
        self._changed()

    def process_entities(self, tlo: Any) -> None:
        rows = set(self._entities_to_rows(tlo))
        if rows <= self._entities:
            return  # most results repeat known entities: no write
        # One row per id: a renamed user replaces its old row instead of shadowing it.
        ids = {row[0] for row in rows}
        self._entities = {row for row in self._entities if row[0] not in ids} | rows
        self._changed()

    def save(self) -> None:
        self._changed()

    def close(self) -> None:
        # Synchronous on purpose: Telethon flags coroutine-returning sessions as experimental. The account
        # manager awaits flush() itself after a disconnect; this covers disconnects it did not start.
        if not self._dirty or self._persist is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._flush_task is not None:
            self._flush_task.cancel()  # skip the rest of the debounce: write now
        self._flush_task = loop.create_task(self._flush_now())

    async def _flush_now(self) -> None:
        self._forget_flush_task()
        await self.flush()

    def delete(self) -> None:
        # Telethon calls this on log_out; the account manager removes the stored session itself.
        self.disable_persistence()

    def clone(self, to_instance: Any = None) -> Any:
        # Telethon clones for exported (CDN / other DC) senders; those need no persistence.
        return to_instance or MemorySession()
