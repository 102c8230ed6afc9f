"""The store-backed Telethon session: what it keeps, that it writes behind (debounced), and when it does not."""

from __future__ import annotations

import asyncio
import datetime

from telethon.crypto import AuthKey
from telethon.tl import types
from telethon.tl.types.updates import State

from crm_server.telegram.session import StoreSession


class Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def __call__(self, data: bytes) -> None:
        self.writes.append(data)


def user(user_id: int, username: str | None = None, phone: str | None = None) -> types.User:
    return types.User(id=user_id, access_hash=user_id * 7, username=username, phone=phone, first_name="U")


def filled_session(persist: Recorder | None = None) -> StoreSession:
    session = StoreSession(persist, debounce_seconds=0.05)
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(bytes(range(256)))
    session.set_update_state(0, State(pts=10, qts=2, date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc), seq=3, unread_count=0))
    session.process_entities(types.contacts.ResolvedPeer(peer=None, users=[user(101, "alice", "15550001"), user(102)], chats=[]))
    return session


def test_a_restored_session_has_the_key_dc_update_state_and_entities() -> None:
    restored = StoreSession.from_bytes(filled_session().to_bytes())
    assert (restored.dc_id, restored.server_address, restored.port) == (2, "149.154.167.51", 443)
    assert restored.auth_key is not None and restored.auth_key.key == bytes(range(256))
    state = restored.get_update_state(0)
    assert (state.pts, state.qts, state.seq) == (10, 2, 3)
    # Numeric recipients it has seen resolve without asking Telegram.
    assert restored.get_input_entity(102) == types.InputPeerUser(102, 714)
    assert restored.get_input_entity("alice") == types.InputPeerUser(101, 707)
    assert restored.get_entity_rows_by_phone("15550001") == (101, 707)


async def test_changes_are_written_once_per_debounce_window() -> None:
    writes = Recorder()
    session = filled_session(writes)
    session.enable_persistence(writes)
    for pts in range(11, 20):
        session.set_update_state(0, State(pts=pts, qts=2, date=datetime.datetime.now(datetime.timezone.utc), seq=3, unread_count=0))
    await asyncio.sleep(0.2)
    assert len(writes.writes) == 1
    assert StoreSession.from_bytes(writes.writes[0]).get_update_state(0).pts == 19


async def test_entities_already_known_cause_no_write() -> None:
    writes = Recorder()
    session = filled_session()
    session.enable_persistence(writes)
    await session.flush()
    session.process_entities(types.contacts.ResolvedPeer(peer=None, users=[user(101, "alice", "15550001")], chats=[]))
    await asyncio.sleep(0.15)
    assert len(writes.writes) == 1


async def test_a_renamed_user_replaces_its_old_row() -> None:
    session = filled_session()
    session.process_entities(types.contacts.ResolvedPeer(peer=None, users=[user(101, "alice_new")], chats=[]))
    assert session.get_entity_rows_by_username("alice_new") == (101, 707)
    assert session.get_entity_rows_by_username("alice") is None


async def test_a_login_in_progress_writes_nothing_until_persistence_is_enabled() -> None:
    writes = Recorder()
    session = StoreSession(None, debounce_seconds=0.01)
    session.auth_key = AuthKey(bytes(256))
    session.save()
    await asyncio.sleep(0.05)
    session.enable_persistence(writes)
    await session.flush()
    assert len(writes.writes) == 1


async def test_close_flushes_pending_changes_and_delete_stops_writes() -> None:
    writes = Recorder()
    session = StoreSession(writes, debounce_seconds=10)
    session.set_dc(4, "149.154.167.91", 443)
    session.close()
    await asyncio.sleep(0.05)
    assert len(writes.writes) == 1
    session.delete()
    session.set_dc(5, "91.108.56.130", 443)
    await session.flush()
    assert len(writes.writes) == 1


def test_a_gated_session_keeps_only_safe_update_states() -> None:
    """Telethon's own saves may run ahead of the outbox; only states the listener vouches for are kept."""
    moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    session = StoreSession()
    session.set_update_state(0, State(pts=5, qts=0, date=moment, seq=0, unread_count=0))
    session.gate_update_state()
    session.set_update_state(0, State(pts=9, qts=0, date=moment, seq=0, unread_count=0))
    assert session.get_update_state(0).pts == 5
    session.set_safe_update_state(State(pts=7, qts=0, date=moment, seq=0, unread_count=0))
    assert session.get_update_state(0).pts == 7
    restored = StoreSession.from_bytes(session.to_bytes())
    assert restored.get_update_state(0).pts == 7
