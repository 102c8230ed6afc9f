"""The tables of the crm_server store, in SQLAlchemy Core, portable between SQLite and PostgreSQL.

Times are Unix seconds (float) so lease and expiry comparisons are plain numbers on every dialect.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)

metadata = MetaData()


class OutboxState(StrEnum):
    """Where an outbox row is on its way to the webhook."""

    # Waiting for its (next) attempt, or being posted under a lease.
    PENDING = "pending"
    # The webhook took it; kept a while for the operator's view, then purged.
    DELIVERED = "delivered"
    # A dead letter: the webhook refused it for good or retries ran out; waits for an operator's retry.
    DEAD = "dead"


class StoredStatus(StrEnum):
    """What the store knows of an account's login (the runtime states are crm_server.telegram.states')."""

    # No session worth keeping yet: it must log in.
    AUTH_REQUIRED = "auth_required"
    # Logged in: the encrypted session is here and any server may run it.
    AUTHORIZED = "authorized"
    # Telegram ended the session (or it logged out): the session is dropped, nothing tries it again.
    LOGGED_OUT = "logged_out"


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # SHA-256 hex of the key; the key itself is never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    # NULL = admin key (every project).
    Column("project_id", String(128), nullable=True, index=True),
    Column("created_at", Float, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(128), nullable=False),
    Column("phone", String(32), nullable=False),
    # Fernet token of the serialized Telethon session (auth key, DC, update state, entity cache).
    Column("session", LargeBinary, nullable=True),
    # A StoredStatus; "connected" is runtime state, not stored.
    Column("status", String(32), nullable=False, default=StoredStatus.AUTH_REQUIRED.value),
    Column("user_id", BigInteger, nullable=True),
    Column("username", String(64), nullable=True),
    # Which live server process runs this account's client, and until when (renewed while it lives).
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("project_id", "phone", name="uq_accounts_project_phone"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(128), nullable=False),
    Column("phone", String(32), nullable=False),
    Column("url", Text, nullable=False),
    # Fernet token of the shared secret sent as X-Lovable-Secret and used to sign deliveries.
    Column("secret", LargeBinary, nullable=False),
    # False after the receiver answered 410 Gone, until a connect registers it again.
    Column("enabled", Boolean, nullable=False, default=True),
    # Paused by its integration (disabled in the CRM): events wait, pending, until it is resumed.
    Column("paused", Boolean, nullable=False, default=False, server_default=false()),
    # Send the secret itself as X-Lovable-Secret with each delivery (receivers of the original plan check only it).
    Column("secret_header", Boolean, nullable=False, default=True, server_default=true()),
    # The event types it receives, comma-separated (NULL: only `message`, what a receiver of the original plan knows).
    Column("events", Text, nullable=True),
    # Batched delivery (both NULL: one event per POST): at most this many events per POST, sent at the latest
    # this long after the batch's first event.
    Column("batch_max_events", Integer, nullable=True),
    Column("batch_max_wait_ms", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("project_id", "phone", name="uq_webhooks_project_phone"),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("project_id", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    # NULL while the first request is still in flight; the JSON of its success response afterwards.
    Column("response", Text, nullable=True),
    Column("created_at", Float, nullable=False, index=True),
    # The claim that owns the key (random, per request): a claim in one statement tells by it whether it won.
    Column("claim_id", String(32), nullable=True),
)

# Every incoming Telegram message, written before anything else happens to it, until its webhook took it.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    # Stable for the message: it is the `webhook-id`, so a receiver recognises a redelivery.
    Column("event_id", String(64), nullable=False, unique=True),
    Column("project_id", String(128), nullable=False),
    Column("phone", String(32), nullable=False),
    Column("chat_id", String(32), nullable=False),
    Column("message_id", BigInteger, nullable=False),
    # The exact JSON body that is posted (and signed).
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False, default=OutboxState.PENDING.value),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("first_attempt_at", Float, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float, nullable=True),
    UniqueConstraint("project_id", "phone", "chat_id", "message_id", name="uq_outbox_message"),
    Index("ix_outbox_lane", "state", "project_id", "phone", "chat_id", "id"),
    Index("ix_outbox_delivered", "project_id", "phone", "delivered_at"),
)

# Files of incoming messages, downloaded from Telegram into `<state-dir>/media/` once per event, reused by every
# retry of its delivery, removed by the retention sweep (crm_server.media.files).
media = Table(
    "media",
    metadata,
    # The outbox event the file belongs to (one file per message).
    Column("event_id", String(64), primary_key=True),
    # The capability URL's id: random, so knowing a message's identity is no way to its file.
    Column("media_id", String(64), nullable=False, unique=True),
    Column("project_id", String(128), nullable=False),
    Column("phone", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("mime_type", String(127), nullable=True),
    Column("file_name", String(255), nullable=True),
    # NULL when there is no file: `error` says why (too_large, unavailable).
    Column("path", Text, nullable=True),
    Column("size", BigInteger, nullable=True),
    Column("sha256", String(64), nullable=True),
    Column("error", String(32), nullable=True),
    Column("created_at", Float, nullable=False),
    # When its event was delivered (copied from the outbox by the sweep); files go RETENTION after it.
    Column("delivered_at", Float, nullable=True),
    Index("ix_media_created", "created_at"),
)

# The messages of each account crm_server knows the chat of: those it enqueued (incoming and from other devices) and
# those `/telegram/send` sent. Telegram names no chat when private messages are deleted, and tells a restarted client
# of its own sends again: this table answers both (which chat; ours or not). A private chat's message ids are unique
# per account, so (project, phone, message id) is the key.
known_messages = Table(
    "known_messages",
    metadata,
    Column("project_id", String(128), primary_key=True),
    Column("phone", String(32), primary_key=True),
    Column("message_id", BigInteger, primary_key=True),
    Column("chat_id", String(32), nullable=False),
    # Sent through /telegram/send: never a `message.outgoing` event.
    Column("sent", Boolean, nullable=False, default=False, server_default=false()),
    Column("created_at", Float, nullable=False, index=True),
)

# History imports (POST /telegram/history/import, and the one at an account's first connect): each job's state and,
# per dialog, the last message id handed to the outbox, so a restarted server resumes where the job was.
history_jobs = Table(
    "history_jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("phone", String(32), nullable=False),
    Column("per_chat", Integer, nullable=False),
    Column("since", Float, nullable=False),
    Column("state", String(16), nullable=False),  # running | done | failed
    Column("dialogs", Integer, nullable=False, default=0, server_default="0"),
    Column("messages", Integer, nullable=False, default=0, server_default="0"),
    Column("error", String(200), nullable=True),
    # JSON: {chat_id: [last message id done, messages done, finished]}.
    Column("progress", Text, nullable=False, default="{}", server_default="{}"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_history_jobs_account", "project_id", "phone"),
)
