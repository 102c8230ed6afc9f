"""Configuration of the functions host, read once from the environment (and `.env`) at the edge.

Everything else receives a `FunctionsSettings` instance; nothing reads `os.environ` directly.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from functions._shared.crm_addresses import CrmAddressPolicy, parse_crm_hosts
from safeguards.proxies import parse_trusted_proxies
from supabase_local.project_files import config_toml

# supabase/config.toml of this project (checkout or installed wheel): where `verify_jwt` per function is read from.
DEFAULT_SUPABASE_CONFIG = config_toml()


class FunctionsSettings(BaseSettings):
    """Every knob of the functions host; environment names follow Supabase's (SUPABASE_*) and the contract's."""

    # hide_input_in_errors: a malformed key or secret must not be echoed by a validation error.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True, use_attribute_docstrings=True)

    supabase_url: str = Field(validation_alias=AliasChoices("SUPABASE_URL", "supabase_url"))
    """The Supabase project's URL (`https://<ref>.supabase.co`, or the local API): the functions reach its REST API
    with supabase-py.
    """
    supabase_service_role_key: str = Field(
        validation_alias=AliasChoices("SUPABASE_SERVICE_ROLE_KEY", "supabase_service_role_key"))
    """The project's service_role key: the functions' database access (it bypasses RLS)."""
    supabase_jwt_secret: str | None = Field(
        None, validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "supabase_jwt_secret"))
    """The project's JWT secret: verifies users' HS256 access tokens. Projects with asymmetric keys use
    SUPABASE_JWKS_URL instead (either or both).
    """
    supabase_jwks_url: str | None = Field(
        None, validation_alias=AliasChoices("SUPABASE_JWKS_URL", "supabase_jwks_url"))
    """Where the project publishes its asymmetric signing keys; default
    `<SUPABASE_URL>/auth/v1/.well-known/jwks.json`.
    """
    jwks_cache_seconds: float = Field(
        600.0, gt=0, validation_alias=AliasChoices("SUPABASE_JWKS_CACHE_SECONDS", "jwks_cache_seconds"))
    """How long keys fetched from the JWKS are used before they are fetched again."""
    functions_public_url: str | None = Field(
        None, validation_alias=AliasChoices("FUNCTIONS_PUBLIC_URL", "functions_public_url"))
    """This host's public base URL: crm_server is told to post webhooks to `<it>/functions/v1/telegram-crm-webhook`.
    Default SUPABASE_URL (`tgcrm functions`: its own listen address).
    """
    settings_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("FUNCTIONS_SETTINGS_KEY", "settings_key"))
    """Fernet key sealing integration secrets in `messenger_integrations.settings`. Without it they are stored in clear
    and a warning says so at start.
    """
    wappi_base_url: str = Field(
        "https://wappi.pro", validation_alias=AliasChoices("WAPPI_BASE_URL", "wappi_base_url"))
    """Wappi.pro's API base URL."""
    crm_allow_http_loopback: bool = Field(
        False, validation_alias=AliasChoices("CRM_ALLOW_HTTP_LOOPBACK", "crm_allow_http_loopback"))
    """Local stack only (`tgcrm up` sets it): crm_server calls go to loopback only, over http or https. Off
    (production): https to public addresses only.
    """
    crm_hosts: str | None = Field(None, validation_alias=AliasChoices("FUNCTIONS_CRM_HOSTS", "crm_hosts"))
    """When set, the only crm_servers the functions reach: comma-separated `host[:port]` (no port: the scheme's
    default).
    """
    crm_sandbox_url: str | None = Field(None, validation_alias=AliasChoices("CRM_SANDBOX_URL", "crm_sandbox_url"))
    """Local stack only: the sandbox crm_server, for the admin page's simulated-user panel (`telegram-crm-sandbox`
    answers 404 without it).
    """
    crm_sandbox_api_key: str | None = Field(
        None, validation_alias=AliasChoices("CRM_SANDBOX_API_KEY", "crm_sandbox_api_key"))
    """Local stack only: the sandbox crm_server's admin key."""
    max_request_bytes: int = Field(
        1_048_576, gt=0, validation_alias=AliasChoices("FUNCTIONS_MAX_REQUEST_BYTES", "max_request_bytes"))
    """Largest request body a function reads (413 PAYLOAD_TOO_LARGE past it)."""
    http_timeout_seconds: float = Field(
        15.0, gt=0, validation_alias=AliasChoices("FUNCTIONS_HTTP_TIMEOUT_SECONDS", "http_timeout_seconds"))
    """Timeout of outbound calls: the REST API, crm_server, Wappi, the JWKS."""
    rest_connections: int = Field(
        10, ge=1, validation_alias=AliasChoices("FUNCTIONS_REST_CONNECTIONS", "rest_connections"))
    """Connections supabase-py holds to the REST API: about the gateway's database pool, since more concurrent requests
    would only wait there.
    """
    send_timeout_seconds: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("FUNCTIONS_SEND_TIMEOUT_SECONDS", "send_timeout_seconds"))
    """Timeout of a send through crm_server or Wappi (Telegram may pace it)."""
    store_attempts: int = Field(4, ge=1, validation_alias=AliasChoices("FUNCTIONS_STORE_ATTEMPTS", "store_attempts"))
    """Attempts to store an outgoing message after a successful send before giving up (never answer success without
    it).
    """
    webhook_tolerance_seconds: int = Field(
        300, gt=0, validation_alias=AliasChoices("WEBHOOK_TOLERANCE_SECONDS", "webhook_tolerance_seconds"))
    """How far a webhook's signed timestamp may lie from now."""
    webhook_key_cache_seconds: float = Field(
        2.0, ge=0, le=10, validation_alias=AliasChoices("WEBHOOK_KEY_CACHE_SECONDS", "webhook_key_cache_seconds"))
    """How long telegram-crm-webhook trusts an enabled integration found by its key (0: never, at most 10). A changed
    secret is seen that late; disabling is seen at once.
    """
    trusted_proxies: str | None = Field(
        None, validation_alias=AliasChoices("FUNCTIONS_TRUSTED_PROXIES", "trusted_proxies"))
    """Reverse proxies whose `X-Forwarded-For`/`-Proto` `tgcrm functions` believes: comma-separated IP addresses or
    networks, or `*`; empty: none (the headers are ignored).
    """
    media_max_bytes: int = Field(
        50 * 1024 * 1024, gt=0, validation_alias=AliasChoices("FUNCTIONS_MEDIA_MAX_BYTES", "media_max_bytes"))
    """Incoming files: the most fetched from crm_server per message; a larger one is stored as a message without the
    file.
    """
    webhook_batch_max_events: int = Field(
        100, ge=0, le=500,
        validation_alias=AliasChoices("FUNCTIONS_WEBHOOK_BATCH_MAX_EVENTS", "webhook_batch_max_events"))
    """telegram-crm-connect asks crm_server to post up to this many events in one webhook (the contract's "Batched
    delivery": stored in one database call); 0: one event per POST (`batch: null`). At most 500, the webhook's limit.
    """
    webhook_batch_max_wait_ms: int = Field(
        20, ge=0, le=1000,
        validation_alias=AliasChoices("FUNCTIONS_WEBHOOK_BATCH_MAX_WAIT_MS", "webhook_batch_max_wait_ms"))
    """How long crm_server may hold a batch's first event waiting for more (milliseconds): the latency a lone message
    gains, traded for fewer, fuller POSTs under load. At most 1000, crm_server's limit.
    """
    media_public: bool = Field(False, validation_alias=AliasChoices("FUNCTIONS_MEDIA_PUBLIC", "media_public"))
    """Whether the chat-media bucket is public (rows keep public URLs, as the original system's did) or private
    (signed URLs)."""
    media_signed_url_seconds: int = Field(
        600, ge=10, le=86_400,
        validation_alias=AliasChoices("FUNCTIONS_MEDIA_SIGNED_URL_SECONDS", "media_signed_url_seconds"))
    """Outgoing files: how long the signed URL of a chat-media object handed to crm_server (or Wappi) may be read."""
    media_fetch_timeout_seconds: float = Field(
        120.0, gt=0, validation_alias=AliasChoices("FUNCTIONS_MEDIA_FETCH_TIMEOUT_SECONDS",
                                                   "media_fetch_timeout_seconds"))
    """Timeout of fetching one incoming file from crm_server, all of it (a 50 MiB file over a slow link takes a
    while)."""
    metrics_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("FUNCTIONS_METRICS_KEY", "metrics_key"))
    """Key of `/functions/v1/metrics` (Prometheus text: requests and latency per function, upstream failures), sent
    as `Authorization: Bearer <key>`. Unset: the endpoint is not served (404).
    """
    cors_allow_origin: str = Field("*", validation_alias=AliasChoices("FUNCTIONS_CORS_ORIGIN", "cors_allow_origin"))
    """`Access-Control-Allow-Origin` of the functions' answers."""
    supabase_config: Path = Field(
        DEFAULT_SUPABASE_CONFIG, validation_alias=AliasChoices("SUPABASE_CONFIG_TOML", "supabase_config"),
        json_schema_extra={"shown_default": "the project's supabase/config.toml"})
    """The `config.toml` whose `[functions.<name>] verify_jwt` the host follows; default the project's own
    `supabase/config.toml`.
    """

    @field_validator("supabase_url", "functions_public_url", "wappi_base_url", "supabase_jwks_url", "crm_sandbox_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str | None) -> str | None:
        return None if value is None else value.strip().rstrip("/")

    @field_validator("supabase_jwt_secret", "functions_public_url", "supabase_jwks_url", "crm_sandbox_url",
                     "crm_sandbox_api_key", "settings_key", "crm_hosts", "metrics_key", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("settings_key")
    @classmethod
    def _fernet_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        key = value.get_secret_value().strip()
        try:
            Fernet(key)
        except ValueError:
            raise ValueError("must be a Fernet key (32 url-safe base64-encoded bytes)") from None
        return SecretStr(key)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str | None) -> str | None:
        parse_trusted_proxies(value)  # a bad entry stops the host at start, naming it
        return value

    @field_validator("crm_hosts")
    @classmethod
    def _crm_hosts(cls, value: str | None) -> str | None:
        parse_crm_hosts(value)  # a bad entry stops the host at start, naming it
        return value

    @property
    def crm_address_policy(self) -> CrmAddressPolicy:
        """Which crm_server addresses the functions may reach (crm_addresses.py)."""
        return CrmAddressPolicy(local_mode=self.crm_allow_http_loopback, allowed_hosts=parse_crm_hosts(self.crm_hosts))

    @property
    def public_url(self) -> str:
        return self.functions_public_url or self.supabase_url

    @property
    def jwks_url(self) -> str:
        """The project's JWKS, where Supabase Auth publishes its asymmetric signing keys."""
        return self.supabase_jwks_url or f"{self.supabase_url}/auth/v1/.well-known/jwks.json"

    @property
    def webhook_batch(self) -> dict[str, int] | None:
        """What telegram-crm-connect sends crm_server as `batch` (None: one event per POST)."""
        if self.webhook_batch_max_events == 0:
            return None
        return {"max_events": self.webhook_batch_max_events, "max_wait_ms": self.webhook_batch_max_wait_ms}

    def webhook_url(self, webhook_key: str) -> str:
        return f"{self.public_url}/functions/v1/telegram-crm-webhook?key={webhook_key}"
