"""The simulated Telegram world: users, accounts, auth keys, per-account message logs with pts, flood, revocation.
State lives in SQLite (a file or memory), written through on every mutation, so restarts and other processes see it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from crm_server.sandbox import files as file_store
from crm_server.sandbox import srp
from crm_server.sandbox.errors import IncomingItemError, SandboxError, UnknownAccount, UnknownUser, UsernameTaken
from crm_server.sandbox.live import LiveSessions, sessions_for
from crm_server.sandbox.media import KINDS, SimFile, SimIncomingMedia, default_mime_type
from crm_server.sandbox.records import (  # noqa: F401  (EDIT... and the records are imported from here too)
    DELETE,
    EDIT,
    MESSAGE_COLUMNS as _MESSAGE_COLUMNS,
    READ_INBOX,
    READ_OUTBOX,
    USER_COLUMNS as _USER_COLUMNS,
    SimMedia,
    SimMessage,
    SimUpdate,
    SimUser,
    UpdateListener,
    message_from_row as _message,
    update_from_row as _update,
    user_from_row as _user,
)
from safeguards.private_files import create_private_file, make_private_dir

LOGIN_CODE = "12345"

_log = logging.getLogger(__name__)

# Telegram user ids are plain positive integers; starting high keeps them from looking like test counters.
_FIRST_USER_ID = 100_000_001
# Telegram's own service account ("Telegram", +42777): it sends login codes and new-login alerts to every account.
SERVICE_USER_ID = 777000
SERVICE_USER_PHONE = "42777"
# A new account's pts: Telegram never uses 0 (PERSISTENT_TIMESTAMP_EMPTY), so the first message gets pts 2.
_INITIAL_PTS = 1
# Unanswered `account.getPassword` challenges kept; they are single-use and short-lived.
_MAX_PASSWORD_CHALLENGES = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    phone TEXT NOT NULL UNIQUE,
    username TEXT UNIQUE COLLATE NOCASE,
    first_name TEXT NOT NULL,
    last_name TEXT,
    privacy_restricted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS accounts (
    user_id INTEGER PRIMARY KEY REFERENCES users (id),
    pts INTEGER NOT NULL,
    last_message_id INTEGER NOT NULL DEFAULT 0,
    flood_seconds INTEGER,
    gap_pending INTEGER NOT NULL DEFAULT 0,
    srp_salt1 BLOB,
    srp_salt2 BLOB,
    srp_verifier BLOB
);
CREATE TABLE IF NOT EXISTS auth_keys (
    key_id INTEGER PRIMARY KEY,
    user_id INTEGER,
    password_pending_user_id INTEGER,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS auth_keys_by_user ON auth_keys (user_id);
CREATE TABLE IF NOT EXISTS messages (
    account_id INTEGER NOT NULL,
    id INTEGER NOT NULL,
    peer_id INTEGER NOT NULL,
    out INTEGER NOT NULL,
    text TEXT NOT NULL,
    date INTEGER NOT NULL,
    pts INTEGER NOT NULL,
    media_kind TEXT,
    media_url TEXT,
    media_name TEXT,
    media_file_id INTEGER,
    edit_date INTEGER,
    -- The process that wrote the row (live.LiveSessions.origin): its own sessions got it pushed at once.
    origin INTEGER,
    -- Whether the account had the peer before this message (then Telegram pushes the short form).
    peer_known INTEGER,
    PRIMARY KEY (account_id, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_pts ON messages (account_id, pts);
CREATE INDEX IF NOT EXISTS messages_by_peer ON messages (account_id, peer_id, id);
-- Updates other than new messages (edits, deletions, reads), each with the pts it took: pushed and in getDifference.
CREATE TABLE IF NOT EXISTS other_updates (
    account_id INTEGER NOT NULL,
    pts INTEGER NOT NULL,
    pts_count INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    date INTEGER NOT NULL,
    origin INTEGER,
    PRIMARY KEY (account_id, pts)
) WITHOUT ROWID;
-- Unanswered account.getPassword challenges (single-use, the oldest dropped past a bound): any process checks them.
CREATE TABLE IF NOT EXISTS password_checks (
    srp_id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    b TEXT NOT NULL,
    srp_b BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS known_peers (
    account_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    contact INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, user_id)
) WITHOUT ROWID;
"""

# What one incoming file may weigh (POST /sandbox/incoming refuses more with 413): bounds the world's growth.
MAX_INCOMING_FILE_BYTES = 64 * 1024 * 1024
# Telegram's caption limit for a message with media (its text otherwise may have 4096 characters).
CAPTION_LENGTH_MAX = 1024


@dataclass(frozen=True, slots=True)
class SimIncoming:
    """One message of a bulk injection (`SandboxWorld.incoming_many`): what one `incoming` call takes."""

    account_phone: str
    sender: str | int
    text: str
    media: SimIncomingMedia | None = None


def _switch_to_wal(db: sqlite3.Connection, timeout: float = 10.0) -> None:
    """WAL journal, waiting for other processes opening the same new file: SQLite answers a journal-mode change
    "database is locked" at once, without its busy handler, while another connection holds the file's lock
    (instances of `tgcrm cluster` start together)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def phone_digits(phone: str | int) -> str:
    """"+7 (999) 000-11-22" -> "79990001122"; Telegram identifies phones by their digits only."""
    digits = "".join(ch for ch in str(phone) if ch.isdigit())
    if not 5 <= len(digits) <= 15:
        raise SandboxError(f"not a phone number: {phone!r}")
    return digits


def _clean_username(username: str | None) -> str | None:
    if username is None:
        return None
    name = username.strip().lstrip("@")
    if not name or not all(ch.isalnum() or ch == "_" for ch in name):
        raise SandboxError(f"not a username: {username!r}")
    return name


def iso_utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat()


class SandboxWorld:
    """The whole simulated Telegram. Methods are synchronous and cheap; safe to call from any thread.

    With `path`, state is a SQLite file (WAL) written through on every mutation: a restarted server finds its
    accounts logged in, and other processes may open the same file (crm_server instances of one cluster, a test
    injecting messages): every write is one IMMEDIATE transaction, nothing another process must see is kept in
    memory, and each process's watcher (live.py) pushes what the others wrote to its own connected sessions.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            # 0600 from the start (SQLite would make it 0644 minus the umask): it holds the accounts' phones.
            make_private_dir(self.path.parent)
            create_private_file(self.path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path) if self.path is not None else ":memory:",
            isolation_level=None,  # explicit transactions only: each mutation commits as one unit
            check_same_thread=False,  # routes may run in a thread pool; the lock serialises access
            timeout=10.0,
        )
        if self.path is not None:
            _switch_to_wal(self._db)
            # NORMAL is durable across process crashes with WAL; only an OS crash may lose the last commits.
            self._db.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.executescript(file_store.SCHEMA)
            # One migration at a time: two processes opening an old file together must not both add a column.
            self._db.execute("BEGIN IMMEDIATE")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
            if "media_file_id" not in columns:  # a world file written before stored media existed
                self._db.execute("ALTER TABLE messages ADD COLUMN media_file_id INTEGER")
            if "edit_date" not in columns:  # a world file written before edits existed
                self._db.execute("ALTER TABLE messages ADD COLUMN edit_date INTEGER")
            for table, column in (("messages", "origin"), ("messages", "peer_known"), ("other_updates", "origin")):
                # A world file written before several processes shared one.
                if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER")
            account_columns = {row[1] for row in self._db.execute("PRAGMA table_info(accounts)")}
            if "gap_pending" not in account_columns:
                self._db.execute("ALTER TABLE accounts ADD COLUMN gap_pending INTEGER NOT NULL DEFAULT 0")
            self._db.execute("COMMIT")
            self._db.execute("INSERT OR IGNORE INTO users (id, phone, first_name) VALUES (?, ?, 'Telegram')",
                             (SERVICE_USER_ID, SERVICE_USER_PHONE))
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('secret', ?)", (os.urandom(32),))
            self._secret: bytes = self._db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()[0]
        self._live = sessions_for(self.path)
        self._live.add_writer(id(self), self._data_version)
        # The bytes of photos and documents, in this same database (one transaction with their messages).
        self.files = file_store.FileStore(self._db, self._lock, self._write, self._secret)
        self._attached: set[tuple[int, UpdateListener]] = set()  # what close() must drop
        # Requests answered, by TL class name: lets tests and benchmarks see what Telethon really asked for.
        self.request_counts: Counter[str] = Counter()

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the database; sessions served through this world lose their connection (as if the server died)."""
        with self._lock:
            attached, self._attached = self._attached, set()
        for account_id, listener in attached:
            if self._live.detach(account_id, listener):
                listener.on_dropped()
        self._live.remove_writer(id(self))
        with self._lock:
            self._db.close()

    def _data_version(self) -> int:
        """The write connection's `PRAGMA data_version`: changed by other connections' commits, not by its own."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def __enter__(self) -> SandboxWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two processes bumping the same pts cannot interleave.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # ---------------------------------------------------------------- public control API (routes, tests)

    def create_user(
        self,
        phone: str,
        username: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
        privacy_restricted: bool = False,
    ) -> int:
        """A simulated user; idempotent by phone (the existing user is updated with the fields given)."""
        digits = phone_digits(phone)
        name = _clean_username(username)
        with self._write() as db:
            user_id = self._ensure_user(db, digits, first_name)
            if name is not None:
                owner = db.execute("SELECT id FROM users WHERE username = ?", (name,)).fetchone()
                if owner is not None and owner[0] != user_id:
                    raise UsernameTaken(f"username @{name} belongs to user {owner[0]}")
            db.execute(
                "UPDATE users SET username = COALESCE(?, username), first_name = COALESCE(?, first_name),"
                " last_name = COALESCE(?, last_name), privacy_restricted = ? WHERE id = ?",
                (name, first_name, last_name, int(privacy_restricted), user_id),
            )
        return user_id

    def create_account(self, phone: str, password: str | None = None) -> int:
        """Pre-create an account (idempotent); with `password` its login requires that 2FA password, without one
        it requires none. Only an SRP verifier is kept, never the password."""
        digits = phone_digits(phone)
        verifier = srp.make_verifier(password) if password else None  # slow KDF: outside the write lock
        with self._write() as db:
            user_id = self._ensure_account(db, digits)
            db.execute(
                "UPDATE accounts SET srp_salt1 = ?, srp_salt2 = ?, srp_verifier = ? WHERE user_id = ?",
                (
                    verifier.salt1 if verifier else None,
                    verifier.salt2 if verifier else None,
                    verifier.verifier if verifier else None,
                    user_id,
                ),
            )
        return user_id

    def incoming(self, account_phone: str, sender: str | int, text: str, media: SimIncomingMedia | None = None
                 ) -> int:
        """`sender` (phone, @username or id) writes `text` to the account, with a file when `media` is given
        (`text` is then its caption and may be empty); returns the id in the account's chat.

        An account that never logged in becomes one now: the message waits in its dialogs (history before the
        login), as a Telegram user's chats exist before any API client signs in."""
        sender_id = self.user_id_of(sender)
        with self._write() as db:
            account_id = self._ensure_account(db, phone_digits(account_phone))
        _check_incoming(text, media)
        attachment = self._store_incoming_file(media) if media is not None else None
        _, received = self.deliver(sender_id, account_id, text, attachment)
        assert received is not None  # the recipient is an account, so it always gets its copy
        return received.id

    def incoming_many(self, messages: list[SimIncoming]) -> list[int]:
        """Many `incoming` calls in one: every message is checked first (`IncomingItemError` names the first
        refused, and nothing is written), then all are written in one transaction, then each is pushed to the
        connected sessions in list order as the same update one `incoming` pushes. Returns the ids, in order.

        Files are stored before that transaction (each in its own), as `incoming` stores them before its message."""
        senders: list[int] = []
        resolved: dict[str | int, int] = {}  # a bulk usually repeats a few senders, and one account
        owners: dict[str, int | None] = {}
        for index, item in enumerate(messages):
            try:
                if item.sender not in resolved:
                    resolved[item.sender] = self.user_id_of(item.sender)
                senders.append(resolved[item.sender])
                _check_incoming(item.text, item.media)
                if item.account_phone not in owners:
                    owner = self.user_by_phone(phone_digits(item.account_phone))
                    owners[item.account_phone] = owner.id if owner is not None else None
                if owners[item.account_phone] == senders[-1]:
                    raise SandboxError("the sender is the account itself: its own messages are outgoing")
            except SandboxError as exc:
                raise IncomingItemError(index, exc) from None
        attachments: list[SimMedia | None] = []
        for index, item in enumerate(messages):
            try:
                attachments.append(self._store_incoming_file(item.media) if item.media is not None else None)
            except SandboxError as exc:
                raise IncomingItemError(index, exc) from None
        now = int(time.time())
        with self._write() as db:
            accounts: dict[str, int] = {}
            delivered = []
            for item, sender_id, attachment in zip(messages, senders, attachments):
                digits = phone_digits(item.account_phone)
                if digits not in accounts:
                    accounts[digits] = self._ensure_account(db, digits)
                delivered.append(self._deliver_in(db, sender_id, accounts[digits], item.text, now, attachment))
        ids = []
        for (sent, received, peer_known), sender_id in zip(delivered, senders):
            assert received is not None  # the recipient is an account, so it always gets its copy
            self._tell_new(sender_id, received.account_id, sent, received, peer_known)
            ids.append(received.id)
        return ids

    def _store_incoming_file(self, media: SimIncomingMedia) -> SimMedia:
        if media.kind not in KINDS:
            raise SandboxError(f"media kind must be one of {', '.join(KINDS)}")
        if not media.data:
            raise SandboxError("a file must not be empty")
        if len(media.data) > MAX_INCOMING_FILE_BYTES:
            raise SandboxError(f"a file has at most {MAX_INCOMING_FILE_BYTES} bytes")
        stored = self.files.store(
            media.kind,
            media.data,
            mime_type=media.mime_type or default_mime_type(media.kind, media.file_name),
            name=media.file_name,
            date=int(time.time()),
            duration=media.duration,
            width=media.width,
            height=media.height,
            title=media.title,
            performer=media.performer,
            unavailable=media.unavailable,
        )
        return SimMedia(kind=stored.kind, name=stored.name, file_id=stored.id)

    def file(self, file_id: int) -> SimFile | None:
        """A stored file's metadata (kind, mime type, name, size, sha256...), without its bytes."""
        return self.files.get(file_id)

    def sent(self, account_phone: str, *, with_media: bool = False) -> list[dict]:
        """What the account has sent, oldest first: `to_user_id, text, message_id, date` (ISO 8601 UTC), and
        `media: {kind, file_name, size, sha256}` when a file was sent. With `with_media`, every entry has `media`
        (None without any) and external URLs show as `{kind, url, name}`."""
        account_id = self._account_id(account_phone)
        rows = self._all(
            "SELECT m.peer_id, m.text, m.id, m.date, m.media_kind, m.media_url, m.media_name, f.kind, f.name,"
            " f.size, f.sha256 FROM messages m LEFT JOIN files f ON f.id = m.media_file_id"
            " WHERE m.account_id = ? AND m.out = 1 ORDER BY m.id",
            (account_id,),
        )
        result = []
        for peer_id, text, message_id, date, kind, url, name, file_kind, file_name, size, sha256 in rows:
            entry: dict = {"to_user_id": peer_id, "text": text, "message_id": message_id, "date": iso_utc(date)}
            if file_kind is not None:
                entry["media"] = {"kind": file_kind, "file_name": file_name, "size": size, "sha256": sha256}
            elif with_media:
                entry["media"] = {"kind": kind, "url": url, "name": name} if kind else None
            result.append(entry)
        return result

    def flood(self, account_phone: str, seconds: int) -> None:
        """The account's next send fails with FLOOD_WAIT_<seconds>."""
        account_id = self._account_id(account_phone)
        with self._write() as db:
            db.execute("UPDATE accounts SET flood_seconds = ? WHERE user_id = ?", (int(seconds), account_id))

    def force_gap(self, account_phone: str) -> None:
        """The account's next catch-up answers updates.differenceTooLong (Telegram's answer after a long outage:
        the client gets the current pts and nothing of what it missed)."""
        account_id = self._account_id(account_phone)
        with self._write() as db:
            db.execute("UPDATE accounts SET gap_pending = 1 WHERE user_id = ?", (account_id,))

    def take_gap(self, account_id: int) -> bool:
        """Whether a forced gap is pending for the account, cleared as it is reported."""
        row = self._one("SELECT gap_pending FROM accounts WHERE user_id = ?", (account_id,))
        if not row or not row[0]:
            return False
        with self._write() as db:
            changed = db.execute("UPDATE accounts SET gap_pending = 0 WHERE user_id = ? AND gap_pending = 1"
                                 " RETURNING user_id", (account_id,)).fetchone()
        return changed is not None

    def revoke(self, account_phone: str) -> None:
        """Terminate every session of the account: its auth keys answer 401 AUTH_KEY_UNREGISTERED from now on."""
        account_id = self._account_id(account_phone)
        with self._write() as db:
            db.execute(
                "UPDATE auth_keys SET user_id = NULL, password_pending_user_id = NULL, revoked_at = ?"
                " WHERE user_id = ?",
                (int(time.time()), account_id),
            )
        # Sessions in other processes learn it from their watcher (live.py), which sees the key unbound.
        for listener in self._live.listeners(account_id):
            if self.detach(account_id, listener):
                listener.on_revoked()

    def drop_connections(self, account_phone: str) -> int:
        """Simulate a network failure of every connected session of the account in this process; returns how
        many dropped."""
        account_id = self._account_id(account_phone)
        dropped = 0
        for listener in self._live.listeners(account_id):
            if self.detach(account_id, listener):
                listener.on_dropped()
                dropped += 1
        return dropped

    def user_id_of(self, who: str | int) -> int:
        """Resolve a phone ("+7…" or digits), "@username" or numeric id to a user id, or raise UnknownUser."""
        row: tuple | None = None
        if isinstance(who, int):
            row = self._one("SELECT id FROM users WHERE id = ?", (who,))
        else:
            text = who.strip()
            if text.startswith("@") or not text.lstrip("+").replace(" ", "").replace("-", "").isdigit():
                row = self._one("SELECT id FROM users WHERE username = ?", (text.lstrip("@"),))
            else:
                digits = "".join(ch for ch in text if ch.isdigit())
                row = self._one("SELECT id FROM users WHERE phone = ?", (digits,))
                if row is None and not text.startswith("+"):
                    row = self._one("SELECT id FROM users WHERE id = ?", (int(digits),))
        if row is None:
            raise UnknownUser(f"no simulated user {who!r}")
        return int(row[0])

    def accounts(self) -> list[SimUser]:
        """Every account of the world (logged in at least once, or pre-created)."""
        rows = self._all(
            f"SELECT {', '.join('u.' + c.strip() for c in _USER_COLUMNS.split(','))}"
            " FROM users u JOIN accounts a ON a.user_id = u.id ORDER BY u.id"
        )
        return [_user(row) for row in rows]

    # ---------------------------------------------------------------- users and peers (for the request handlers)

    def user(self, user_id: int) -> SimUser | None:
        row = self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return _user(row) if row else None

    def user_by_phone(self, phone: str) -> SimUser | None:
        row = self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE phone = ?", (phone,))
        return _user(row) if row else None

    def user_by_username(self, username: str) -> SimUser | None:
        row = self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username.lstrip("@"),))
        return _user(row) if row else None

    def access_hash(self, viewer_id: int, user_id: int) -> int:
        """The per-viewer access hash Telegram would hand `viewer_id` for `user_id`: derived, so never stored."""
        digest = hashlib.blake2b(struct.pack("<qq", viewer_id, user_id), key=self._secret, digest_size=8).digest()
        return struct.unpack("<q", digest)[0]

    def remember(self, account_id: int, user_ids: list[int], *, contact: bool = False) -> None:
        """The account has now received these users (resolve, import, get): later messages from them are short."""
        ids = [uid for uid in user_ids if uid != account_id]
        if not ids:
            return
        with self._write() as db:
            db.executemany(
                "INSERT INTO known_peers (account_id, user_id, contact) VALUES (?, ?, ?)"
                " ON CONFLICT (account_id, user_id) DO UPDATE SET contact = MAX(contact, excluded.contact)",
                [(account_id, uid, int(contact)) for uid in ids],
            )

    def is_contact(self, account_id: int, user_id: int) -> bool:
        row = self._one("SELECT contact FROM known_peers WHERE account_id = ? AND user_id = ?", (account_id, user_id))
        return bool(row and row[0])

    def contacts(self, account_id: int) -> list[SimUser]:
        rows = self._all(
            f"SELECT {', '.join('u.' + c.strip() for c in _USER_COLUMNS.split(','))} FROM known_peers k"
            " JOIN users u ON u.id = k.user_id WHERE k.account_id = ? AND k.contact = 1 ORDER BY u.id",
            (account_id,),
        )
        return [_user(row) for row in rows]

    # ---------------------------------------------------------------- auth keys, login and 2FA

    def open_key(self, key_id: int) -> int | None:
        """Register an auth key on first sight (a fresh key is simply not logged in); returns its bound account."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO auth_keys (key_id, created_at) VALUES (?, ?)", (key_id, int(time.time()))
            )
        return self.key_owner(key_id)

    def key_owner(self, key_id: int) -> int | None:
        row = self._one("SELECT user_id FROM auth_keys WHERE key_id = ?", (key_id,))
        return row[0] if row else None

    def bind_key(self, key_id: int, user_id: int) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE auth_keys SET user_id = ?, password_pending_user_id = NULL, revoked_at = NULL"
                " WHERE key_id = ?",
                (user_id, key_id),
            )

    def unbind_key(self, key_id: int) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE auth_keys SET user_id = NULL, password_pending_user_id = NULL WHERE key_id = ?", (key_id,)
            )

    def set_password_pending(self, key_id: int, user_id: int) -> None:
        """The code was right but the account has 2FA: this key may now only check the password."""
        with self._write() as db:
            db.execute("UPDATE auth_keys SET password_pending_user_id = ? WHERE key_id = ?", (user_id, key_id))

    def password_pending(self, key_id: int) -> int | None:
        row = self._one("SELECT password_pending_user_id FROM auth_keys WHERE key_id = ?", (key_id,))
        return row[0] if row else None

    def sign_in_account(self, phone: str) -> SimUser:
        """Any phone may log in: it becomes an account (and a user) on first sign-in."""
        with self._write() as db:
            user_id = self._ensure_account(db, phone)
        user = self.user(user_id)
        assert user is not None
        return user

    def password_verifier(self, user_id: int) -> srp.PasswordVerifier | None:
        row = self._one("SELECT srp_salt1, srp_salt2, srp_verifier FROM accounts WHERE user_id = ?", (user_id,))
        if row is None or row[2] is None:
            return None
        return srp.PasswordVerifier(salt1=row[0], salt2=row[1], verifier=row[2])

    def start_password_check(self, user_id: int, challenge: srp.Challenge) -> int:
        """Remember a challenge under a new srp_id, in the world: the check may come through another process."""
        srp_id = int.from_bytes(os.urandom(7), "big")
        with self._write() as db:
            db.execute("INSERT INTO password_checks (srp_id, user_id, b, srp_b, created_at) VALUES (?, ?, ?, ?, ?)",
                       (srp_id, user_id, format(challenge.b, "x"), challenge.srp_b, int(time.time())))
            db.execute("DELETE FROM password_checks WHERE srp_id NOT IN"
                       " (SELECT srp_id FROM password_checks ORDER BY created_at DESC, rowid DESC LIMIT ?)",
                       (_MAX_PASSWORD_CHALLENGES,))
        return srp_id

    def take_password_check(self, srp_id: int) -> tuple[int, srp.Challenge] | None:
        """The challenge for `srp_id`, removed: each srp_id answers exactly one check, right or wrong."""
        with self._write() as db:
            row = db.execute("DELETE FROM password_checks WHERE srp_id = ? RETURNING user_id, b, srp_b",
                             (srp_id,)).fetchone()
        if row is None:
            return None
        return int(row[0]), srp.Challenge(b=int(row[1], 16), srp_b=bytes(row[2]))

    # ---------------------------------------------------------------- messages, pts and the update log

    def take_flood(self, account_id: int) -> int | None:
        """Seconds of the pending flood wait for this account, cleared as it is reported."""
        # Read first: almost every send has no flood pending, and a read needs no write lock.
        row = self._one("SELECT flood_seconds FROM accounts WHERE user_id = ?", (account_id,))
        if row is None or row[0] is None:
            return None
        with self._write() as db:
            row = db.execute(
                "UPDATE accounts SET flood_seconds = NULL WHERE user_id = ? AND flood_seconds IS NOT NULL"
                " RETURNING ?",
                (account_id, row[0]),
            ).fetchone()
        return None if row is None else int(row[0])

    def deliver(
        self,
        from_id: int,
        to_id: int,
        text: str,
        media: SimMedia | None = None,
        *,
        origin: UpdateListener | None = None,
    ) -> tuple[SimMessage | None, SimMessage | None]:
        """`from_id` writes to `to_id`: each side that is an account gets its own copy (id, pts + 1).

        Returns (sender's copy, recipient's copy). Connected sessions are told, except `origin`, the session
        that sent it and gets the result of its own request instead (as Telegram does).
        """
        now = int(time.time())
        with self._write() as db:
            sent, received, peer_known = self._deliver_in(db, from_id, to_id, text, now, media)
        # Listeners only enqueue work, so telling them outside the transaction keeps the lock short.
        self._tell_new(from_id, to_id, sent, received, peer_known, origin=origin)
        return sent, received

    def _deliver_in(self, db: sqlite3.Connection, from_id: int, to_id: int, text: str, now: int,
                    media: SimMedia | None) -> tuple[SimMessage | None, SimMessage | None, bool]:
        """`deliver`'s writes, inside the caller's transaction: (sender's copy, recipient's copy, peer known)."""
        sent = received = None
        peer_known = True
        accounts = {
            row[0]
            for row in db.execute("SELECT user_id FROM accounts WHERE user_id IN (?, ?)", (from_id, to_id))
        }
        if from_id in accounts:
            sent = self._append(db, from_id, to_id, True, text, now, media)
        if to_id != from_id and to_id in accounts:
            peer_known = (
                db.execute(
                    "SELECT 1 FROM known_peers WHERE account_id = ? AND user_id = ?", (to_id, from_id)
                ).fetchone()
                is not None
            )
            received = self._append(db, to_id, from_id, False, text, now, media, peer_known)
            if not peer_known:
                # It receives the sender's user object with this message (pushed or via getDifference).
                db.execute("INSERT INTO known_peers (account_id, user_id) VALUES (?, ?)", (to_id, from_id))
        return sent, received, peer_known

    def _tell_new(self, from_id: int, to_id: int, sent: SimMessage | None, received: SimMessage | None,
                  peer_known: bool, *, origin: UpdateListener | None = None) -> None:
        """Push a delivered message's copies to the connected sessions of each side (but `origin`)."""
        if sent is not None:
            listeners = [listener for listener in self._live.listeners(from_id) if listener is not origin]
            if listeners:
                recipient = self.user(to_id)
                assert recipient is not None
                for listener in listeners:
                    _notify(listener, sent, recipient, True)
        if received is not None:
            listeners = list(self._live.listeners(to_id))
            if listeners:
                sender = self.user(from_id)
                assert sender is not None
                for listener in listeners:
                    _notify(listener, received, sender, peer_known)

    def pts(self, account_id: int) -> int:
        row = self._one("SELECT pts FROM accounts WHERE user_id = ?", (account_id,))
        return int(row[0]) if row else _INITIAL_PTS

    def difference(self, account_id: int, pts: int, limit: int
                   ) -> tuple[list[SimMessage], list[SimUpdate], int]:
        """The update log after `pts`: new messages and other updates (each oldest first, together at most `limit`
        in pts order) and the account's pts, read as one snapshot so a write meanwhile (by another process) is
        either in both or in neither."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                rows = self._db.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE account_id = ? AND pts > ? ORDER BY pts LIMIT ?",
                    (account_id, pts, limit),
                ).fetchall()
                others = self._db.execute(
                    "SELECT account_id, pts, pts_count, kind, data, date FROM other_updates"
                    " WHERE account_id = ? AND pts > ? ORDER BY pts LIMIT ?",
                    (account_id, pts, limit),
                ).fetchall()
                row = self._db.execute("SELECT pts FROM accounts WHERE user_id = ?", (account_id,)).fetchone()
            finally:
                self._db.execute("COMMIT")
        messages = [_message(r) for r in rows]
        updates = [_update(r) for r in others]
        if len(messages) + len(updates) > limit:
            # Keep the `limit` lowest pts of both: the caller sees a prefix of the log, never a hole in it.
            cut = sorted([m.pts for m in messages] + [u.pts for u in updates])[limit - 1]
            messages = [m for m in messages if m.pts <= cut]
            updates = [u for u in updates if u.pts <= cut]
        return messages, updates, (int(row[0]) if row else _INITIAL_PTS)

    # ---------------------------------------------------------------- the owner's other devices, edits, reads

    def outgoing(self, account_phone: str, to: str | int, text: str, media: SimIncomingMedia | None = None) -> int:
        """The account's owner writes to `to` from another device: every live session of the account gets the
        message with out=True; returns its id in the account's chat."""
        account_id = self._account_id(account_phone)
        peer_id = self.user_id_of(to)
        if media is None and not text:
            raise SandboxError("text must not be empty")
        attachment = self._store_incoming_file(media) if media is not None else None
        with self._write() as db:
            # The owner's app resolved the peer: from now on the account knows it (short updates).
            db.execute("INSERT OR IGNORE INTO known_peers (account_id, user_id) VALUES (?, ?)", (account_id, peer_id))
        sent, _ = self.deliver(account_id, peer_id, text, attachment)
        assert sent is not None
        return sent.id

    def service_message(self, account_phone: str, text: str) -> int:
        """Telegram's service user (777000) writes to the account, e.g. a login code or a new-login notice."""
        return self.incoming(account_phone, SERVICE_USER_ID, text)

    def edit(self, account_phone: str, author: str | int, message_id: int, text: str) -> SimUpdate:
        """`author` (the chat's user, or the account itself) edits message `message_id` of the account's chat."""
        account_id = self._account_id(account_phone)
        author_id = self.user_id_of(author)
        if not text:
            raise SandboxError("text must not be empty")
        now = int(time.time())
        with self._write() as db:
            row = db.execute("SELECT peer_id, out FROM messages WHERE account_id = ? AND id = ?",
                             (account_id, message_id)).fetchone()
            if row is None:
                raise SandboxError(f"the account has no message {message_id}")
            peer_id, out = row
            if (author_id == account_id) != bool(out) or (not out and author_id != peer_id):
                raise SandboxError(f"message {message_id} was not written by {author!r}")
            db.execute("UPDATE messages SET text = ?, edit_date = ? WHERE account_id = ? AND id = ?",
                       (text, now, account_id, message_id))
            update = self._log_update(db, account_id, EDIT, {"message_id": message_id, "text": text,
                                                              "edit_date": now, "peer_id": peer_id}, 1, now)
        self._tell(update)
        return update

    def delete(self, account_phone: str, message_ids: list[int], revoke: bool = False) -> SimUpdate | None:
        """Delete messages of the account's chats (from another device, or the client deleting for both with
        `revoke`): one updateDeleteMessages with pts_count = the messages that existed; None if none did.
        (The sandbox keeps one copy per side with its own ids: the peer's copy, if the peer is an account, stays.)"""
        account_id = self._account_id(account_phone)
        now = int(time.time())
        with self._write() as db:
            marks = ",".join("?" * len(message_ids))
            found = [r[0] for r in db.execute(
                f"SELECT id FROM messages WHERE account_id = ? AND id IN ({marks}) ORDER BY id",
                (account_id, *message_ids))]
            if not found:
                return None
            db.execute(f"DELETE FROM messages WHERE account_id = ? AND id IN ({','.join('?' * len(found))})",
                       (account_id, *found))
            update = self._log_update(db, account_id, DELETE, {"message_ids": found, "revoke": bool(revoke)},
                                      len(found), now)
        self._tell(update)
        return update

    def read(self, account_phone: str, reader: str | int, max_id: int, peer: str | int | None = None) -> SimUpdate:
        """A read receipt in the account's chat. `reader` is the client: it read the account's messages up to
        `max_id` (updateReadHistoryOutbox). `reader` is the account itself (its owner on another device): it read
        the chat with `peer` up to `max_id` (updateReadHistoryInbox)."""
        account_id = self._account_id(account_phone)
        reader_id = self.user_id_of(reader)
        if reader_id == account_id:
            if peer is None:
                raise SandboxError("an inbox read (from the account itself) needs `peer`")
            kind, peer_id = READ_INBOX, self.user_id_of(peer)
        else:
            kind, peer_id = READ_OUTBOX, reader_id
        now = int(time.time())
        with self._write() as db:
            update = self._log_update(db, account_id, kind, {"peer_id": peer_id, "max_id": int(max_id)}, 1, now)
        self._tell(update)
        return update

    def read_history(self, account_id: int, peer_id: int, max_id: int, *, origin: UpdateListener | None = None
                     ) -> SimUpdate:
        """The account (messages.readHistory) read its chat with `peer_id` up to `max_id` (0: everything). Its
        other sessions get updateReadHistoryInbox; a peer that is an account gets updateReadHistoryOutbox up to
        its own copy of the newest message read."""
        now = int(time.time())
        with self._write() as db:
            if not max_id:
                row = db.execute("SELECT MAX(id) FROM messages WHERE account_id = ? AND peer_id = ?",
                                 (account_id, peer_id)).fetchone()
                max_id = int(row[0] or 0)
            mine = self._log_update(db, account_id, READ_INBOX, {"peer_id": peer_id, "max_id": max_id}, 1, now)
            theirs = None
            if db.execute("SELECT 1 FROM accounts WHERE user_id = ?", (peer_id,)).fetchone() is not None:
                # Copies are written together, so the peer's newest copy of an incoming message read is the
                # count of the account's incoming messages read, mapped through the peer's own outgoing ones.
                (count,) = db.execute("SELECT COUNT(*) FROM messages WHERE account_id = ? AND peer_id = ?"
                                      " AND out = 0 AND id <= ?", (account_id, peer_id, max_id)).fetchone()
                row = db.execute("SELECT id FROM messages WHERE account_id = ? AND peer_id = ? AND out = 1"
                                 " ORDER BY id LIMIT 1 OFFSET ?", (peer_id, account_id, max(count - 1, 0))).fetchone()
                if row is not None and count:
                    theirs = self._log_update(db, peer_id, READ_OUTBOX, {"peer_id": account_id, "max_id": row[0]},
                                              1, now)
        self._tell(mine, origin=origin)
        if theirs is not None:
            self._tell(theirs)
        return mine

    def reads(self, account_phone: str) -> list[dict]:
        """Every read receipt of the account, oldest first: `{direction: inbox|outbox, peer_id, max_id, date}`."""
        account_id = self._account_id(account_phone)
        rows = self._all("SELECT kind, data, date FROM other_updates WHERE account_id = ? AND kind IN (?, ?)"
                         " ORDER BY pts", (account_id, READ_INBOX, READ_OUTBOX))
        result = []
        for kind, data, date in rows:
            values = json.loads(data)
            result.append({"direction": "inbox" if kind == READ_INBOX else "outbox", "peer_id": values["peer_id"],
                           "max_id": values["max_id"], "date": iso_utc(date)})
        return result

    def _log_update(self, db: sqlite3.Connection, account_id: int, kind: str, data: dict, pts_count: int,
                    date: int) -> SimUpdate:
        # An update moves the account's pts by its pts_count, as Telegram does (a deletion: one per message).
        (pts,) = db.execute("UPDATE accounts SET pts = pts + ? WHERE user_id = ? RETURNING pts",
                            (pts_count, account_id)).fetchone()
        db.execute("INSERT INTO other_updates (account_id, pts, pts_count, kind, data, date, origin)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?)", (account_id, pts, pts_count, kind, json.dumps(data), date,
                                                     self._live.origin))
        return SimUpdate(account_id, pts, pts_count, kind, data, date)

    def _tell(self, update: SimUpdate, *, origin: UpdateListener | None = None) -> None:
        for listener in self._live.listeners(update.account_id):
            if listener is origin:
                continue
            try:
                listener.on_other_update(update)
            except Exception:
                _log.exception("sandbox session failed to take a pushed update")

    def messages_by_id(self, account_id: int, ids: list[int]) -> dict[int, SimMessage]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._all(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE account_id = ? AND id IN ({marks})",
            (account_id, *ids),
        )
        return {row[1]: _message(row) for row in rows}

    def history(self, account_id: int, peer_id: int, offset_id: int, limit: int, min_id: int = 0
                ) -> list[SimMessage]:
        """Newest first, below `offset_id` when it is set and above `min_id` (messages.getHistory semantics)."""
        rows = self._all(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE account_id = ? AND peer_id = ? AND id < ? AND id > ?"
            " ORDER BY id DESC LIMIT ?",
            (account_id, peer_id, offset_id or 2**62, min_id, limit),
        )
        return [_message(row) for row in rows]

    def dialogs(self, account_id: int, limit: int) -> list[SimMessage]:
        """The top message of each chat, newest chat first."""
        rows = self._all(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE account_id = ? AND id IN"
            " (SELECT MAX(id) FROM messages WHERE account_id = ? GROUP BY peer_id) ORDER BY id DESC LIMIT ?",
            (account_id, account_id, limit),
        )
        return [_message(row) for row in rows]

    # ---------------------------------------------------------------- connected sessions

    def attach(self, account_id: int, listener: UpdateListener) -> None:
        """`listener` (a connected session of the account) gets what Telegram pushes from now on, whichever
        process writes it."""
        with self._lock:
            self._attached.add((account_id, listener))
        self._live.attach(account_id, listener, self.pts(account_id))

    def detach(self, account_id: int, listener: UpdateListener) -> bool:
        """Whether the listener was attached (only the caller who detached it tells it why)."""
        with self._lock:
            self._attached.discard((account_id, listener))
        return self._live.detach(account_id, listener)

    @property
    def live(self) -> LiveSessions:
        """This process's sessions on the world's file (QR login registers its waiting sessions there)."""
        return self._live

    # ---------------------------------------------------------------- internals

    def _account_id(self, phone: str) -> int:
        row = self._one(
            "SELECT a.user_id FROM accounts a JOIN users u ON u.id = a.user_id WHERE u.phone = ?",
            (phone_digits(phone),),
        )
        if row is None:
            raise UnknownAccount(f"{phone} has never logged in and was not created as an account")
        return int(row[0])

    @staticmethod
    def _ensure_user(db: sqlite3.Connection, digits: str, first_name: str | None = None) -> int:
        row = db.execute("SELECT id FROM users WHERE phone = ?", (digits,)).fetchone()
        if row is not None:
            return int(row[0])
        (next_id,) = db.execute("SELECT COALESCE(MAX(id) + 1, ?) FROM users WHERE id >= ?",
                                (_FIRST_USER_ID, _FIRST_USER_ID)).fetchone()
        db.execute(
            "INSERT INTO users (id, phone, first_name) VALUES (?, ?, ?)",
            (next_id, digits, first_name or f"User {digits[-4:]}"),
        )
        return int(next_id)

    def _ensure_account(self, db: sqlite3.Connection, digits: str) -> int:
        user_id = self._ensure_user(db, digits)
        db.execute("INSERT OR IGNORE INTO accounts (user_id, pts) VALUES (?, ?)", (user_id, _INITIAL_PTS))
        return user_id

    def _append(
        self,
        db: sqlite3.Connection,
        account_id: int,
        peer_id: int,
        out: bool,
        text: str,
        date: int,
        media: SimMedia | None,
        peer_known: bool = True,
    ) -> SimMessage:
        # One new message moves the account's pts by exactly 1 (pts_count = 1), as Telegram does.
        pts, message_id = db.execute(
            "UPDATE accounts SET pts = pts + 1, last_message_id = last_message_id + 1 WHERE user_id = ?"
            " RETURNING pts, last_message_id",
            (account_id,),
        ).fetchone()
        db.execute(
            f"INSERT INTO messages ({_MESSAGE_COLUMNS}, origin, peer_known)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            (
                account_id,
                message_id,
                peer_id,
                int(out),
                text,
                date,
                pts,
                media.kind if media else None,
                media.url if media else None,
                media.name if media else None,
                media.file_id if media else None,
                self._live.origin,
                int(peer_known),
            ),
        )
        return SimMessage(account_id, message_id, peer_id, out, text, date, pts, media)


def _check_incoming(text: str, media: SimIncomingMedia | None) -> None:
    """What an incoming message must be before anything of it is written."""
    if media is None and not text:
        raise SandboxError("text must not be empty")
    if media is not None and len(text) > CAPTION_LENGTH_MAX:
        raise SandboxError(f"a caption has at most {CAPTION_LENGTH_MAX} characters")


def _notify(listener: UpdateListener, message: SimMessage, peer: SimUser, peer_known: bool) -> None:
    # One broken session must not fail the write for the others, nor the caller who sent the message:
    # the message is in the log already and reaches that session through getDifference anyway.
    try:
        listener.on_new_message(message, peer, peer_known)
    except Exception:
        _log.exception("sandbox session failed to take a pushed message")
