"""The models of what the functions read and store: integration settings (messenger_integrations.settings), the
database rows, and a provider's accepted message as it becomes a row. Validated once, where they are read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions._shared.errors import IntegrationMisconfiguredError

ModelT = TypeVar("ModelT", bound=BaseModel)
Provider = Literal["telegram_crm", "wappi"]


# --- integration settings (messenger_integrations.settings) ---------------------------------------------------------

class TelegramCrmSettings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    crmApiUrl: str = Field(min_length=1)
    crmApiKey: str = Field(min_length=1)
    crmPhoneNumber: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    # The server signs every delivery (it said so at connect): the webhook then refuses unsigned ones, so a secret
    # seen once is not enough to forge the next. False for servers of the original plan.
    signatureRequired: bool = False


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
    # The account's state as crm_server last reported it (account.status events), not a setting.
    account_state: str | None = None
    account_state_reason: str | None = None
    account_state_at: datetime | None = None

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
    # "sent", or "sending" while (or after) a send through a provider that cannot dedupe had no answer.
    message_status: str = "sent"
    metadata: dict[str, Any] = Field(default_factory=dict)


class IngestResult(BaseModel):
    """What `public.ingest_telegram_message` returns."""

    message_id: str
    client_id: str
    duplicate: bool


class SentMessage(BaseModel):
    """A message a provider accepted: its id there and, when known, the Telegram chat it went to."""

    message_id: str | int | None
    chat_id: str | None = None
    to_user_id: str | None = None
    # The row claimed for this send before it went out (providers that cannot dedupe a retry): completed, not
    # inserted, when the message is stored.
    claimed_row_id: str | None = None
