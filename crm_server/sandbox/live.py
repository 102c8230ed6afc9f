"""The connected sessions of one world file in this process, and the watcher that brings them what other processes
wrote to that file.

Several processes may open one world file (the crm_server instances of a cluster, a test injecting messages): they
are one Telegram. A write pushes at once to the sessions of its own process (world.py) and tags its rows with this
process's `origin`. The watcher, a thread that runs only while this process has sessions on the file, notices commits
of any connection with `PRAGMA data_version` (read from SQLite's shared memory, no disk access), then reads, for its
sessions' accounts, what other origins wrote after each session's cursor, and pushes it as the writer would have:
new messages and other updates in pts order, a terminated auth key, an accepted QR login token. A session's cursor
only moves forward and local rows are never the watcher's, so a row reaches a session at most once.

Which data_version: a connection's changes when any *other* connection commits, so the watcher's own connection sees
this process's writes too, and read the rows of every local commit only to leave them all (origin is ours). The
worlds of this process register their write connections (`add_writer`); when there is one, the watcher asks those
instead, and a local commit no longer wakes it. (bench/inbound.py paced at 492 msg/s injects 25 times a second:
each injection cost the watcher a five-statement read transaction to find nothing of another origin.)
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from crm_server.sandbox.records import (
    MESSAGE_COLUMNS,
    USER_COLUMNS,
    SimMessage,
    SimUpdate,
    SimUser,
    UpdateListener,
    message_from_row,
    update_from_row,
    user_from_row,
)

_log = logging.getLogger(__name__)

# How often the watcher looks for other processes' commits while this process has sessions: well under Telegram's
# own push latency, and one cheap pragma per period when nothing changed.
POLL_SECONDS = 0.02


class LoginTokenSession(Protocol):
    """A session that exported a QR login token (a sandbox sender): told when a phone accepts it."""

    key_id: int

    def on_login_token(self) -> None: ...


@dataclass(slots=True)
class _Watched:
    account_id: int
    cursor: int  # the account's pts up to which other processes' rows were already pushed to this session


class LiveSessions:
    """Connected listeners per account, shared by every world opened on the same file in this process (they are
    the same Telegram), and the QR-login sessions waiting for their token to be accepted."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        # Tags the rows this process writes, so its watcher leaves them to the immediate push (positive, 56 bits).
        self.origin = int.from_bytes(os.urandom(7), "big")
        self._lock = threading.Lock()
        self._by_account: dict[int, dict[UpdateListener, None]] = {}
        self._watched: dict[UpdateListener, _Watched] = {}
        self._token_sessions: dict[int, LoginTokenSession] = {}
        self._watcher: threading.Thread | None = None
        # data_version of each world's write connection in this process (see the module's docstring).
        self._writers: dict[int, Callable[[], int]] = {}
        self.polls = 0  # how often the watcher read the file for changes (tests: local writes do not count)

    # ------------------------------------------------------------ this process's writers

    def add_writer(self, token: int, data_version: Callable[[], int]) -> None:
        """A world of this process writes through a connection whose `PRAGMA data_version` `data_version` reads."""
        with self._lock:
            self._writers[token] = data_version

    def remove_writer(self, token: int) -> None:
        with self._lock:
            self._writers.pop(token, None)

    def _versions(self, db: sqlite3.Connection) -> tuple[int, ...]:
        """What changes when another connection than this process's writers committed to the file (their own
        commits left out when there is a single writer; with several, each one's commits show in the others')."""
        with self._lock:
            writers = list(self._writers.values())
        if writers:
            try:
                return tuple(version() for version in writers)
            except sqlite3.Error:
                pass  # a world closing meanwhile: its own connection's view below
        (version,) = db.execute("PRAGMA data_version").fetchone()
        return (version,)

    # ------------------------------------------------------------ sessions

    def attach(self, account_id: int, listener: UpdateListener, pts: int) -> None:
        """`listener` now gets the account's updates; from other processes, those after `pts` (the account's pts
        when it connected: what came before is the client's to fetch with getDifference)."""
        with self._lock:
            self._by_account.setdefault(account_id, {})[listener] = None
            self._watched[listener] = _Watched(account_id, pts)
            self._ensure_watcher()

    def detach(self, account_id: int, listener: UpdateListener) -> bool:
        """Whether `listener` was attached to the account (so only one caller tells it it was cut off)."""
        with self._lock:
            listeners = self._by_account.get(account_id)
            if listeners is None or listener not in listeners:
                return False
            del listeners[listener]
            if not listeners:
                del self._by_account[account_id]
            watched = self._watched.get(listener)
            if watched is not None and watched.account_id == account_id:
                del self._watched[listener]
            return True

    def listeners(self, account_id: int) -> tuple[UpdateListener, ...]:
        with self._lock:
            return tuple(self._by_account.get(account_id, ()))

    # ------------------------------------------------------------ QR login tokens

    def wait_for_login_token(self, session: LoginTokenSession) -> None:
        """`session` exported a token: tell it (once) when a phone in any process accepts its key's token."""
        with self._lock:
            self._token_sessions[session.key_id] = session
            self._ensure_watcher()

    def forget_login_token(self, key_id: int) -> None:
        with self._lock:
            self._token_sessions.pop(key_id, None)

    def login_token_accepted(self, key_id: int, *, notify: bool = True) -> bool:
        """A token of `key_id` was accepted: its exporting session, if it is in this process, is told now
        (unless `notify` is False: the update was lost); returns whether the session is here."""
        with self._lock:
            session = self._token_sessions.pop(key_id, None)
        if session is None:
            return False
        if notify:
            try:
                session.on_login_token()
            except Exception:
                _log.exception("sandbox session failed to take updateLoginToken")
        return True

    # ------------------------------------------------------------ the watcher

    def _ensure_watcher(self) -> None:
        # Called with the lock held. An in-memory world has no other process to watch.
        if self.path is None or self._watcher is not None:
            return
        self._watcher = threading.Thread(target=self._watch, name="sandbox-world-watcher", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        assert self.path is not None
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0)
        try:
            last_version = None
            while True:
                time.sleep(POLL_SECONDS)
                with self._lock:
                    if not self._watched and not self._token_sessions:
                        self._watcher = None  # the next attach starts a new one
                        return
                try:
                    version = self._versions(db)
                    if version == last_version:
                        continue
                    last_version = version
                    self.polls += 1
                    self._poll(db)
                except sqlite3.Error:
                    # A locked or vanished file: keep going, the next period retries (sessions still catch up
                    # with getDifference on their next gap).
                    _log.exception("sandbox world watcher could not read %s", self.path)
                    last_version = None
        finally:
            db.close()

    def _poll(self, db: sqlite3.Connection) -> None:
        with self._lock:
            watched = [(listener, w.account_id, w.cursor) for listener, w in self._watched.items()]
            waiting = list(self._token_sessions)
        if watched:
            self._poll_sessions(db, watched)
        if waiting:
            marks = ",".join("?" * len(waiting))
            accepted = [row[0] for row in db.execute(
                f"SELECT DISTINCT key_id FROM login_tokens WHERE key_id IN ({marks}) AND accepted_by IS NOT NULL"
                " AND notify = 1", waiting)]
            for key_id in accepted:
                self.login_token_accepted(key_id)

    def _poll_sessions(self, db: sqlite3.Connection, watched: list[tuple[UpdateListener, int, int]]) -> None:
        lowest: dict[int, int] = {}
        for _, account_id, cursor in watched:
            lowest[account_id] = min(lowest.get(account_id, cursor), cursor)
        events: dict[int, list[tuple[int, SimMessage | SimUpdate, SimUser | None, bool]]] = {}
        # One snapshot: the accounts' pts and every row up to them, so no row below a new cursor is missed.
        db.execute("BEGIN")
        try:
            marks = ",".join("?" * len(lowest))
            pts_now = dict(db.execute(f"SELECT user_id, pts FROM accounts WHERE user_id IN ({marks})", tuple(lowest)))
            for account_id, cursor in lowest.items():
                if pts_now.get(account_id, cursor) > cursor:
                    events[account_id] = self._rows_after(db, account_id, cursor, pts_now[account_id])
            key_ids = list({getattr(listener, "key_id", None) for listener, _, _ in watched} - {None})
            owners = dict(db.execute(f"SELECT key_id, user_id FROM auth_keys WHERE key_id IN"
                                     f" ({','.join('?' * len(key_ids))})", key_ids)) if key_ids else {}
        finally:
            db.execute("COMMIT")
        for listener, account_id, _ in watched:
            key_id = getattr(listener, "key_id", None)
            if key_id is not None and owners.get(key_id, account_id) != account_id:
                # Terminated (or logged out) through another process: what world.revoke does for local sessions.
                if self.detach(account_id, listener):
                    _call(listener.on_revoked)
                continue
            self._push(listener, account_id, events.get(account_id, ()), pts_now.get(account_id))

    def _rows_after(self, db: sqlite3.Connection, account_id: int, cursor: int, pts: int
                    ) -> list[tuple[int, SimMessage | SimUpdate, SimUser | None, bool]]:
        messages = db.execute(
            f"SELECT {MESSAGE_COLUMNS}, peer_known FROM messages WHERE account_id = ? AND pts > ? AND pts <= ?"
            " AND origin IS NOT ? ORDER BY pts", (account_id, cursor, pts, self.origin)).fetchall()
        others = db.execute(
            "SELECT account_id, pts, pts_count, kind, data, date FROM other_updates WHERE account_id = ?"
            " AND pts > ? AND pts <= ? AND origin IS NOT ? ORDER BY pts",
            (account_id, cursor, pts, self.origin)).fetchall()
        peers: dict[int, SimUser] = {}
        peer_ids = list({row[2] for row in messages})
        if peer_ids:
            rows = db.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id IN ({','.join('?' * len(peer_ids))})",
                              peer_ids)
            peers = {row[0]: user_from_row(row) for row in rows}
        found: list[tuple[int, SimMessage | SimUpdate, SimUser | None, bool]] = []
        for row in messages:
            message = message_from_row(row[:-1])
            found.append((message.pts, message, peers.get(message.peer_id), bool(row[-1])))
        for row in others:
            update = update_from_row(row)
            found.append((update.pts, update, None, False))
        found.sort(key=lambda event: event[0])
        return found

    def _push(self, listener: UpdateListener, account_id: int,
              events: Iterable[tuple[int, SimMessage | SimUpdate, SimUser | None, bool]], pts: int | None) -> None:
        with self._lock:
            watched = self._watched.get(listener)
            if watched is None or watched.account_id != account_id:
                return  # detached meanwhile
            cursor = watched.cursor
            if pts is not None and pts > cursor:
                watched.cursor = pts
        # Only this thread moves a cursor forward, so the rows between the old and the new one are this session's
        # alone to push, each once.
        for event_pts, record, peer, peer_known in events:
            if event_pts <= cursor:
                continue
            if isinstance(record, SimMessage):
                if peer is not None:
                    _call(listener.on_new_message, record, peer, peer_known)
            else:
                _call(listener.on_other_update, record)


def _call(callback: Callable[..., None], *args: object) -> None:
    # One broken session must not stop the watcher for the others; the rows stay in the log for getDifference.
    try:
        callback(*args)
    except Exception:
        _log.exception("sandbox session failed to take a pushed update")


_BY_FILE: dict[tuple[int, str], LiveSessions] = {}
_BY_FILE_LOCK = threading.Lock()


def sessions_for(path: Path | None) -> LiveSessions:
    """The live sessions of the world file `path` in this process (a new, private set for an in-memory world).
    Keyed by process id too: a forked child is another process and must not take its parent's origin."""
    if path is None:
        return LiveSessions(None)
    key = (os.getpid(), str(path.resolve()))
    with _BY_FILE_LOCK:
        sessions = _BY_FILE.get(key)
        if sessions is None:
            sessions = _BY_FILE[key] = LiveSessions(path.resolve())
        return sessions
