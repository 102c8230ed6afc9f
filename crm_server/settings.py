"""Configuration of crm_server, read once from the environment (and `.env`) at the edge.

Everything else receives a `ServerSettings` instance; nothing reads `os.environ` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from safeguards.private_files import make_private_dir
from safeguards.proxies import parse_trusted_proxies

# Telegram's test data centre (DC 2). Test accounts use phones 99966XYYYY and code XXXXX.
TEST_DC = (2, "149.154.167.40", 443)
# What a server keeps in its state folder: the store (unless CRM_DATABASE_URL) and the key sessions and webhook
# secrets are encrypted with (unless CRM_SESSION_KEY). Both are made by the first `tgcrm server` or `tgcrm up`.
STORE_FILE = "crm.sqlite3"
SESSION_KEY_FILE = "crm_session.key"


class ServerSettings(BaseSettings):
    """Every knob of crm_server; environment names follow the contract (CRM_*, TGCRM_*, TELEGRAM_*)."""

    # Each field's docstring is its description: docs/configuration.md is generated from them.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True,
                                      use_attribute_docstrings=True)

    state_dir: Path = Field(Path(".local"), validation_alias=AliasChoices("TGCRM_STATE_DIR", "state_dir"))
    """Folder of crm_server's state: its SQLite store, session key and sandbox world (with `tgcrm up`, the whole
    stack's data). Created 0700.
    """
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("TGCRM_HOST", "host"))
    """Address crm_server listens on."""
    port: int = Field(8090, validation_alias=AliasChoices("TGCRM_CRM_PORT", "port"))
    """Port crm_server listens on."""
    database_url: str | None = Field(None, validation_alias=AliasChoices("CRM_DATABASE_URL", "database_url"))
    """SQLAlchemy (async) URL of crm_server's store, instead of `<state_dir>/crm.sqlite3`."""
    session_key: str | None = Field(None, validation_alias=AliasChoices("CRM_SESSION_KEY", "session_key"))
    """Fernet key that encrypts Telegram sessions and webhook secrets in the store; default:
    `<state_dir>/crm_session.key`, made on first start. Keep it with the store.
    """

    sandbox: bool = Field(False, validation_alias=AliasChoices("CRM_SANDBOX", "sandbox"))
    """Run on the offline Telegram sandbox instead of real Telegram (any phone logs in, the code is 12345)."""
    sandbox_world: Path | None = Field(None, validation_alias=AliasChoices("CRM_SANDBOX_WORLD", "sandbox_world"))
    """The sandbox's simulated Telegram (a SQLite file); default `<state_dir>/sandbox_world.sqlite3`. Instances
    pointed at one file are one Telegram: what any of them writes reaches the live clients of all."""
    sandbox_qr_token_seconds: int = Field(
        30, ge=1, le=3600,
        validation_alias=AliasChoices("CRM_SANDBOX_QR_TOKEN_SECONDS", "sandbox_qr_token_seconds"),
    )
    """How long a QR login token of the sandbox lives, as Telegram's do (about 30 s); crm_server refreshes the QR
    code before it runs out."""

    telegram_api_id: int | None = Field(None, validation_alias=AliasChoices("TELEGRAM_API_ID", "telegram_api_id"))
    """Your application's api_id from my.telegram.org (real Telegram)."""
    telegram_api_hash: str | None = Field(
        None, validation_alias=AliasChoices("TELEGRAM_API_HASH", "telegram_api_hash")
    )
    """Your application's api_hash from my.telegram.org (real Telegram)."""
    telegram_dc: str | None = Field(None, validation_alias=AliasChoices("TELEGRAM_DC", "telegram_dc"))
    """`test` for Telegram's test data centres (phones 99966XYYYY, X the DC; the login code is X five times), or
    `dc_id:ip:port` for another address; empty: production.
    """

    allow_private_webhooks: bool = Field(
        False, validation_alias=AliasChoices("CRM_ALLOW_PRIVATE_WEBHOOKS", "allow_private_webhooks")
    )
    """Tests and development only: webhooks may go to any address, private ones included."""
    private_webhook_hosts: str = Field(
        "", validation_alias=AliasChoices("CRM_PRIVATE_WEBHOOK_HOSTS", "private_webhook_hosts")
    )
    """Comma-separated `host:port` pairs webhooks may go to although private (the local stack's own API)."""
    send_rate_per_minute: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("CRM_SEND_RATE_PER_MINUTE", "send_rate_per_minute")
    )
    """Messages one account sends per minute at most once its burst is spent."""
    send_burst: int = Field(10, ge=1, validation_alias=AliasChoices("CRM_SEND_BURST", "send_burst"))
    """How many sends an idle account may make back to back before the per-minute pace applies."""

    connect_concurrency: int = Field(
        16, ge=1, validation_alias=AliasChoices("CRM_CONNECT_CONCURRENCY", "connect_concurrency")
    )
    """Accounts connecting to Telegram at once when the server starts."""
    connect_stagger_seconds: float = Field(
        0.01, ge=0, validation_alias=AliasChoices("CRM_CONNECT_STAGGER_SECONDS", "connect_stagger_seconds")
    )
    """Pause between starting two accounts' connections."""
    reconnect_max_backoff_seconds: float = Field(
        300.0, gt=0, validation_alias=AliasChoices("CRM_RECONNECT_MAX_BACKOFF_SECONDS", "reconnect_max_backoff_seconds")
    )
    """Longest wait between two reconnect attempts of an account that lost Telegram."""
    history_on_connect: bool = Field(
        True, validation_alias=AliasChoices("CRM_HISTORY_ON_CONNECT", "history_on_connect")
    )
    """Import an account's recent private conversations (50 messages per chat, 30 days, `history: true`) once, when
    it is first connected: its first live client with nothing delivered yet. Off: only on POST
    /telegram/history/import.
    """
    history_requests_per_second: float = Field(
        2.0, gt=0, validation_alias=AliasChoices("CRM_HISTORY_REQUESTS_PER_SECOND", "history_requests_per_second")
    )
    """History reads (GetDialogs, GetHistory) one account makes per second at most, for imports and gap repair;
    well below Telegram's limits, so a backfill never costs the account a FloodWait on its sends.
    """
    reconcile_minutes: float = Field(
        60.0, ge=0, validation_alias=AliasChoices("CRM_RECONCILE_MINUTES", "reconcile_minutes")
    )
    """Every this many minutes each connected account compares its recent dialogs with what was delivered and
    fetches what is missing (one GetDialogs, plus one GetHistory per dialog behind); 0 turns it off. Gap repair
    after Telegram's `updates.differenceTooLong` runs regardless.
    """
    telegram_connect_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("TELEGRAM_CONNECT_TIMEOUT_SECONDS", "telegram_connect_timeout_seconds")
    )
    """Longest a connection to Telegram may take, handshake and first answer included; past it the attempt fails as a
    network failure does (a login answers 503, a logged-in account retries with backoff).
    """
    lease_ttl_seconds: float = Field(
        15.0, gt=0, validation_alias=AliasChoices("CRM_LEASE_TTL_SECONDS", "lease_ttl_seconds")
    )
    """How long an instance holds an account without renewing its lease (renewed every third of it); after it a dead
    instance's accounts go to the others."""
    instance_url_setting: str = Field("", validation_alias=AliasChoices("CRM_INSTANCE_URL", "instance_url_setting"))
    """Where the other crm_server instances sharing the store reach this one (requests for the accounts it holds are
    forwarded there); empty: this server's own listen URL. One per instance: a process starting at an address an
    earlier one registered takes that one for dead and its leases at once."""
    cluster_secret: str = Field("", validation_alias=AliasChoices("CRM_CLUSTER_SECRET", "cluster_secret"))
    """Shared by the crm_server instances of one store: signs requests forwarded between them (HMAC-SHA256). Empty:
    nothing is forwarded, and a request for an account another instance holds answers 503 ACCOUNT_DISCONNECTED."""
    login_ttl_seconds: float = Field(
        600.0, gt=0, validation_alias=AliasChoices("CRM_LOGIN_TTL_SECONDS", "login_ttl_seconds")
    )
    """How long a started login (code sent, not yet signed in) is kept server-side."""
    log_level: str = Field("info", validation_alias=AliasChoices("CRM_LOG_LEVEL", "log_level"))
    """crm_server's log level: debug, info, warning or error."""
    log_payloads: bool = Field(False, validation_alias=AliasChoices("CRM_LOG_PAYLOADS", "log_payloads"))
    """Let the DEBUG log show the store's statements with their parameters (message texts, phones); off, no log holds a
    message text.
    """
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=AliasChoices("CRM_HTTP_HEADER_TIMEOUT_SECONDS", "http_header_timeout_seconds")
    )
    """How long a client may take to send a request's head; idle and trickling connections are closed after it."""
    http_body_idle_timeout_seconds: float = Field(
        30.0, gt=0,
        validation_alias=AliasChoices("CRM_HTTP_BODY_IDLE_TIMEOUT_SECONDS", "http_body_idle_timeout_seconds"))
    """How long a request's body may pause between two bytes before the connection is closed (a stalled upload
    would otherwise hold its request, and a shutdown waiting for it, forever)."""

    trusted_proxies: str = Field("", validation_alias=AliasChoices("CRM_TRUSTED_PROXIES", "trusted_proxies"))
    """Reverse proxies whose `X-Forwarded-For`/`-Proto` crm_server believes: comma-separated IP addresses or networks,
    or `*`; empty: none (the headers are ignored).
    """

    # Webhook delivery (the outbox worker).
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=AliasChoices("CRM_WEBHOOK_TIMEOUT_SECONDS", "webhook_timeout_seconds")
    )
    """Timeout of one webhook POST."""
    webhook_concurrency: int = Field(
        64, ge=1, validation_alias=AliasChoices("CRM_WEBHOOK_CONCURRENCY", "webhook_concurrency")
    )
    """Chats whose webhooks are posted at once."""
    webhook_batch_max_bytes: int = Field(
        256 * 1024, ge=1024,
        validation_alias=AliasChoices("CRM_WEBHOOK_BATCH_MAX_BYTES", "webhook_batch_max_bytes"),
    )
    """Largest body of a batched webhook POST: a batch goes out once the next event would pass it (an event larger
    than this goes alone). Receivers limit request bodies (telegram-crm-webhook: 1 MiB by default), and a receiver
    answering 413 to a batch makes crm_server halve its batches to that receiver rather than drop them.
    """
    webhook_retry_first_seconds: float = Field(
        2.0, gt=0, le=5, validation_alias=AliasChoices("CRM_WEBHOOK_RETRY_FIRST_SECONDS", "webhook_retry_first_seconds")
    )
    """Delay before the first retry of a failed webhook; each next one doubles."""
    webhook_retry_max_seconds: float = Field(
        900.0, gt=0, validation_alias=AliasChoices("CRM_WEBHOOK_RETRY_MAX_SECONDS", "webhook_retry_max_seconds")
    )
    """Longest delay between two retries of a webhook."""
    webhook_retry_window_seconds: float = Field(
        24 * 3600.0, gt=0,
        validation_alias=AliasChoices("CRM_WEBHOOK_RETRY_WINDOW_SECONDS", "webhook_retry_window_seconds"),
    )
    """How long a webhook is retried before it becomes a dead letter."""
    webhook_lease_seconds: float = Field(
        60.0, ge=1, validation_alias=AliasChoices("CRM_WEBHOOK_LEASE_SECONDS", "webhook_lease_seconds")
    )
    """A worker's hold on a chat's queued messages; a crashed worker's holds expire after this."""
    webhook_keep_delivered_seconds: float = Field(
        7 * 24 * 3600.0, gt=0,
        validation_alias=AliasChoices("CRM_WEBHOOK_KEEP_DELIVERED_SECONDS", "webhook_keep_delivered_seconds"),
    )
    """How long delivered outbox rows are kept for the operator view before they are purged."""

    @field_validator("cluster_secret")
    @classmethod
    def _cluster_secret(cls, value: str) -> str:
        # A short shared secret could be guessed offline from one signed request.
        if value and len(value) < 16:
            raise ValueError("CRM_CLUSTER_SECRET must be at least 16 characters")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        parse_trusted_proxies(value)  # a bad entry stops the server at start, naming it
        return value

    # Media: files of incoming messages, their signed links, and files fetched for outgoing ones.
    public_url_setting: str = Field("", validation_alias=AliasChoices("CRM_PUBLIC_URL", "public_url_setting"))
    """crm_server's address as the webhook's receiver reaches it: the base of the links in `media.url`
    (e.g. `https://crm.example.com` behind a proxy); empty: this server's own listen URL.
    """
    # Telegram lets bots fetch 20 MB and users send 2 GB; 50 MB covers photos, voice and most videos and documents
    # a CRM conversation carries, and keeps a download within a minute or so.
    media_max_bytes: int = Field(
        50 * 1024 * 1024, ge=1, validation_alias=AliasChoices("CRM_MEDIA_MAX_BYTES", "media_max_bytes")
    )
    """The largest file crm_server downloads from Telegram or fetches for a send; a larger incoming one is delivered
    with `media.url: null, error: "too_large"`.
    """
    # A link is made at each post (each retry gets a fresh one), so it only has to outlive the receiver's own
    # queue: a day, well inside the retention, and a leaked link from a log is useless after it.
    media_url_ttl_seconds: float = Field(
        24 * 3600.0, gt=0, validation_alias=AliasChoices("CRM_MEDIA_URL_TTL_SECONDS", "media_url_ttl_seconds")
    )
    """How long a signed `media.url` link works."""
    media_retention_hours: float = Field(
        72.0, gt=0, validation_alias=AliasChoices("CRM_MEDIA_RETENTION_HOURS", "media_retention_hours")
    )
    """How long downloaded files are kept on disk after their message was delivered."""
    # 2 GiB: forty files of the largest size, or thousands of photos and voice notes, before old delivered files
    # are removed early to make room (pending ones never are: new downloads wait instead).
    media_max_disk_bytes: int = Field(
        2 * 1024 ** 3, ge=1, validation_alias=AliasChoices("CRM_MEDIA_MAX_DISK_BYTES", "media_max_disk_bytes")
    )
    """Disk budget of downloaded files (`<state_dir>/media`); past it old delivered files go first."""
    private_media_hosts: str = Field(
        "", validation_alias=AliasChoices("CRM_PRIVATE_MEDIA_HOSTS", "private_media_hosts")
    )
    """Comma-separated `host:port` pairs an outgoing `file_url` may be fetched from although private (the local
    Supabase Storage).
    """
    allow_private_media: bool = Field(
        False, validation_alias=AliasChoices("CRM_ALLOW_PRIVATE_MEDIA", "allow_private_media")
    )
    """Tests and development only: outgoing files may be fetched from any address."""

    @field_validator("telegram_api_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.state_dir / STORE_FILE}"

    @property
    def resolved_sandbox_world(self) -> Path:
        return self.sandbox_world or self.state_dir / "sandbox_world.sqlite3"

    @property
    def public_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def instance_url(self) -> str:
        return (self.instance_url_setting or self.public_url).rstrip("/")

    @property
    def media_base_url(self) -> str:
        return (self.public_url_setting or self.public_url).rstrip("/")

    @property
    def media_dir(self) -> Path:
        return self.state_dir / "media"

    def telegram_credentials(self) -> tuple[int, str]:
        """api_id/api_hash for TelegramClient; the sandbox accepts any, real Telegram needs the user's."""
        if self.telegram_api_id and self.telegram_api_hash:
            return self.telegram_api_id, self.telegram_api_hash
        if self.sandbox:
            return 1, "sandbox"
        raise RuntimeError("set TELEGRAM_API_ID and TELEGRAM_API_HASH, or run with --sandbox")

    def telegram_dc_address(self) -> tuple[int, str, int] | None:
        """The DC new sessions start on, or None for Telethon's production default."""
        value = (self.telegram_dc or "").strip()
        if not value:
            return None
        if value.lower() == "test":
            return TEST_DC
        try:
            dc_id, rest = value.split(":", 1)
            address, port = rest.rsplit(":", 1)
            return int(dc_id), address.strip("[]"), int(port)
        except ValueError:
            raise ValueError(f"TELEGRAM_DC must be 'test' or 'dc_id:ip:port', got {value!r}") from None


def existing_state_problem(settings: ServerSettings, sandbox_world: bool = False) -> str | None:
    """Why `settings` do not lead to an existing server's state, or None when they do (with `sandbox_world`, also the
    sandbox's simulated Telegram the server runs on).

    For the commands that write into a server's state without being that server (`keys create`, `login`): they must
    never make a state of their own, since a key or session stored where no server looks is silently useless.
    """
    folder = settings.state_dir.resolve()
    point_at_it = "run this where `tgcrm up` or `tgcrm server` keeps its state, or point at that folder with " \
                  "--state-dir or TGCRM_STATE_DIR"
    if not settings.database_url and not (folder / STORE_FILE).is_file():
        return f"{folder} is not a tgcrm state folder (it has no {STORE_FILE}, crm_server's store): {point_at_it}"
    if not settings.session_key and not (folder / SESSION_KEY_FILE).is_file():
        # A session sealed with a key made up here could never be opened by the server that has the real one.
        return (f"{folder} has no {SESSION_KEY_FILE}: set CRM_SESSION_KEY to the key the server runs with, or "
                f"{point_at_it}")
    world = settings.resolved_sandbox_world.resolve()
    if sandbox_world and not world.is_file():
        # An account logged in to a world of its own would be unknown to the sandbox the server simulates.
        return (f"there is no sandbox world at {world}: start the server on the sandbox first (`tgcrm up`, or "
                f"`tgcrm server --sandbox`), or {point_at_it}")
    return None


def load_session_key(settings: ServerSettings) -> bytes:
    """The Fernet key sessions and webhook secrets are encrypted with.

    From CRM_SESSION_KEY, else from `<state_dir>/crm_session.key`, created (0600) on first start.
    """
    if settings.session_key:
        key = settings.session_key.encode()
        Fernet(key)  # fail at start, not at the first encryption, if the key is malformed
        return key
    path = settings.state_dir / SESSION_KEY_FILE
    if path.exists():
        return path.read_bytes().strip()
    make_private_dir(settings.state_dir)
    key = Fernet.generate_key()
    # O_EXCL: if two servers start at once on one state dir, exactly one writes the key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key
