"""Pydantic models for everything the functions read and write: requests, responses, webhook payloads,
integration settings, database rows and the answers of crm_server and Wappi. Validated once, at the edge.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from functions._shared.errors import IntegrationMisconfiguredError, MalformedBodyError, ValidationFailedError
from functions._shared.phones import normalize_phone, normalize_phone_or_none

MAX_TEXT_LENGTH = 4096
MAX_IDEMPOTENCY_KEY_LENGTH = 200
ModelT = TypeVar("ModelT", bound=BaseModel)
Provider = Literal["telegram_crm", "wappi"]


def _telegram_id(value: object) -> object:
    """Telegram ids arrive as JSON numbers or numeric strings; both become the decimal string."""
    if isinstance(value, bool):
        raise ValueError("must be a Telegram id (an integer)")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and value.strip().isascii():
        return str(int(value.strip()))
    raise ValueError("must be a Telegram id (an integer)")


def _optional_telegram_id(value: object) -> object:
    return None if value is None or value == "" else _telegram_id(value)


def _phone_text(value: object) -> object:
    # Some senders put phones as JSON numbers (digits without `+`).
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


TelegramId = Annotated[str, BeforeValidator(_telegram_id)]
OptionalTelegramId = Annotated[str | None, BeforeValidator(_optional_telegram_id)]


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _http_url(value: str, *, allow_http_loopback: bool) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an https:// URL")
    if parts.scheme == "http" and not (allow_http_loopback and is_loopback_host(parts.hostname)):
        raise ValueError("must use https (plain http only to a loopback host on a local stack)")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must not carry credentials, a query or a fragment")
    return value.rstrip("/")


# --- requests -------------------------------------------------------------------------------------------------------

class RequestModel(BaseModel):
    """Wire models ignore unknown fields, as the contract says."""

    model_config = ConfigDict(extra="ignore")


class ConnectRequest(RequestModel):
    """telegram-crm-connect: where the CRM server is, its key, and the Telegram account's phone."""

    crmApiUrl: str = Field(min_length=1, max_length=2000)
    crmApiKey: str = Field(min_length=1, max_length=1000)
    crmPhoneNumber: str = Field(min_length=1, max_length=40)
    integrationId: UUID | None = None
    name: str | None = Field(None, max_length=200)

    @field_validator("crmApiUrl")
    @classmethod
    def _crm_api_url(cls, value: str, info: ValidationInfo) -> str:
        allow = bool((info.context or {}).get("allow_http_loopback"))
        return _http_url(value.strip(), allow_http_loopback=allow)

    @field_validator("crmApiKey")
    @classmethod
    def _crm_api_key(cls, value: str) -> str:
        value = value.strip()
        if not value or not value.isprintable():
            raise ValueError("must be the API key crm_server printed")
        return value

    @field_validator("crmPhoneNumber")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value)


class SendRequest(RequestModel):
    """telegram-crm-send and telegram-send: what to send to which client."""

    clientId: UUID
    text: str | None = Field(None, max_length=MAX_TEXT_LENGTH)
    fileUrl: str | None = Field(None, max_length=2000)
    fileName: str | None = Field(None, max_length=255)
    fileType: str | None = Field(None, max_length=100)
    integrationId: UUID | None = None
    senderName: str | None = Field(None, max_length=200)

    @field_validator("fileUrl")
    @classmethod
    def _file_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        return value.strip()

    @model_validator(mode="after")
    def _something_to_send(self) -> SendRequest:
        if (self.text is None or not self.text.strip()) and self.fileUrl is None:
            raise ValueError("text or fileUrl is required")
        return self


class WebhookPayload(RequestModel):
    """What crm_server posts, and the minimal payload of the original plan
    (`{project_id, account_phone, from_id, from_username, text}`): everything else is optional."""

    event_id: str | None = Field(None, max_length=200)
    project_id: UUID
    account_phone: str = Field(max_length=40)
    from_id: TelegramId
    from_username: str | None = Field(None, max_length=100)
    from_first_name: str | None = Field(None, max_length=500)
    from_last_name: str | None = Field(None, max_length=500)
    from_phone: str | None = Field(None, max_length=40)
    chat_id: OptionalTelegramId = None
    message_id: OptionalTelegramId = None
    text: str | None = None
    timestamp: datetime | None = None
    file_url: str | None = Field(None, max_length=2000)
    file_type: str | None = Field(None, max_length=100)
    file_name: str | None = Field(None, max_length=255)

    @field_validator("event_id", mode="before")
    @classmethod
    def _event_id(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("account_phone", mode="before")
    @classmethod
    def _account_phone_text(cls, value: object) -> object:
        return _phone_text(value)

    @field_validator("account_phone")
    @classmethod
    def _account_phone(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("from_phone", mode="before")
    @classmethod
    def _from_phone(cls, value: object) -> object:
        # A sender's phone is a nice-to-have: an unreadable one is dropped rather than losing the message.
        value = _phone_text(value)
        return normalize_phone_or_none(value) if isinstance(value, str) else value

    @field_validator("from_username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        value = (value or "").strip().lstrip("@")
        return value or None

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # The contract's timestamps are UTC; a naive one is read as UTC rather than the server's local time.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value

    @model_validator(mode="after")
    def _has_content(self) -> WebhookPayload:
        if not (self.text or self.file_url):
            raise ValueError("text or file_url is required")
        return self

    @property
    def sender_display_name(self) -> str:
        full = " ".join(part for part in (self.from_first_name, self.from_last_name) if part).strip()
        if full:
            return full
        if self.from_username:
            return "@" + self.from_username
        return self.from_phone or f"Telegram {self.from_id}"


# --- responses ------------------------------------------------------------------------------------------------------

class ConnectResponse(BaseModel):
    success: bool = True
    integrationId: str
    webhookUrl: str
    isPrimary: bool
    status: str


class SendResponse(BaseModel):
    success: bool = True
    messageId: str | int | None
    savedMessageId: str
    integrationId: str
    provider: Provider
    failedOver: bool = False


class WebhookResponse(BaseModel):
    success: bool = True
    messageId: str
    clientId: str
    duplicate: bool


# --- integration settings (messenger_integrations.settings) ---------------------------------------------------------

class TelegramCrmSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    crmApiUrl: str = Field(min_length=1)
    crmApiKey: str = Field(min_length=1)
    crmPhoneNumber: str = Field(min_length=1)
    secret: str = Field(min_length=1)


class WappiSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    profileId: str = Field(min_length=1)
    apiToken: str = Field(min_length=1)


# --- database rows --------------------------------------------------------------------------------------------------

class IntegrationRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    organization_id: str
    messenger_type: str = "telegram"
    provider: Provider
    name: str | None = None
    is_primary: bool = False
    is_enabled: bool = True
    webhook_key: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None

    def telegram_crm_settings(self) -> TelegramCrmSettings:
        return self._settings_as(TelegramCrmSettings, "telegram_crm")

    def wappi_settings(self) -> WappiSettings:
        return self._settings_as(WappiSettings, "wappi")

    def _settings_as(self, model: type[ModelT], provider: str) -> ModelT:
        if self.provider != provider:
            raise IntegrationMisconfiguredError(f"Integration {self.id} is a {self.provider} integration")
        try:
            return model.model_validate(self.settings or {})
        except ValidationError as exc:
            raise IntegrationMisconfiguredError() from exc


class ClientRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    organization_id: str
    name: str | None = None
    phone: str | None = None
    telegram_user_id: str | None = None
    telegram_chat_id: str | None = None
    telegram_username: str | None = None
    is_active: bool = True


class ChatMessageRow(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    integration_id: str | None = None
    external_message_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class IngestResult(BaseModel):
    """What `public.ingest_telegram_message` returns."""

    message_id: str
    client_id: str
    duplicate: bool


# --- answers of the providers ---------------------------------------------------------------------------------------

class CrmAccount(BaseModel):
    model_config = ConfigDict(extra="ignore")

    authorized: bool = False
    user_id: int | str | None = None
    username: str | None = None


class CrmConnectResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str
    project_id: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    account: CrmAccount | None = None


class CrmSendResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = "sent"
    message_id: int | str | None = None
    chat_id: int | str | None = None
    to_user_id: int | str | None = None
    date: str | int | None = None


class SentMessage(BaseModel):
    """A message a provider accepted: its id there and, when known, the Telegram chat it went to."""

    message_id: str | int | None
    chat_id: str | None = None
    to_user_id: str | None = None


# --- parsing at the edge --------------------------------------------------------------------------------------------

def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null", object_hook=_without_nul_characters)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's recursion limit is refused like any bad JSON.
        raise MalformedBodyError("The request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise MalformedBodyError()
    return data


def _without_nul_characters(data: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL text cannot hold U+0000: every string of a request loses its NUL characters here, at the edge,
    instead of failing as a database error after the work is done (a sent message left unstored, a webhook the
    sender retries for a day). They carry no meaning in a chat message or a name."""
    return {_strip_nul(key): _strip_nul(value) for key, value in data.items()}


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [_strip_nul(item) for item in value]
    return value


def validate_model(model: type[ModelT], data: dict[str, Any], context: dict[str, Any] | None = None) -> ModelT:
    """`data` as `model`, or a 422 naming the first field at fault."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise _validation_failed(exc) from exc


def _validation_failed(exc: ValidationError) -> ValidationFailedError:
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ())]
    field = location[0] if location else None
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    if error.get("type") == "missing":
        return ValidationFailedError(f"{field} is required", field=field)
    if field is None:
        # A check across fields ("text or fileUrl is required") names the first field it mentions.
        field = message.split(" ", 1)[0]
        return ValidationFailedError(message, field=field)
    return ValidationFailedError(f"{field}: {message}", field=field)


def idempotency_key(headers: Mapping[str, str]) -> str:
    """The caller's `Idempotency-Key` (a retried request then sends and stores once), else a fresh one."""
    given = headers.get("idempotency-key")
    if given is None:
        return str(uuid4())
    given = given.strip()
    if not given or len(given) > MAX_IDEMPOTENCY_KEY_LENGTH or not given.isascii() or not given.isprintable():
        raise ValidationFailedError(f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
                                    f"characters", field="Idempotency-Key")
    return given
