"""telegram-integration-save: add (or update) a Telegram integration whose provider needs no connect call (Wappi.pro),
and enable or disable any integration (`isEnabled`).

The admin page renders the provider's form from telegram-providers and posts it here; the settings hold secrets, so
only the service role writes them and the answer never echoes them. Disabling a crm_server integration pauses its
account's delivery there first (events wait, pending, instead of being refused by the webhook as dead letters);
enabling resumes it after the row is enabled, so the events it then delivers in order are accepted.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import (
    FunctionError,
    IntegrationNotFoundError,
    RegistrationNotFoundError,
    ValidationFailedError,
)
from functions._shared.providers import PROVIDERS
from functions._shared.runtime import FunctionsRuntime, runtime_of
from functions._shared.parsing import RequestModel, parse_json_object, validate_model
from functions._shared.rows import IntegrationRow, WappiSettings

# Providers saved as plain settings, and the model their settings must satisfy.
SETTINGS_MODELS: dict[str, type[BaseModel]] = {"wappi": WappiSettings}


class SaveRequest(RequestModel):
    provider: str = Field(min_length=1, max_length=40)
    integrationId: UUID | None = None
    name: str | None = Field(None, max_length=200)
    isEnabled: bool | None = None


class SaveResponse(BaseModel):
    success: bool = True
    integrationId: str
    isPrimary: bool
    isEnabled: bool


def provider_settings(provider: str, data: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """The provider's form fields from `data` (a blank secret keeps the saved one), validated as its settings."""
    info = PROVIDERS[provider]
    settings: dict[str, Any] = {}
    for field in info.fields:
        if field.key == "name":
            continue
        value = data.get(field.key)
        value = value.strip() if isinstance(value, str) else value
        if not value and field.secret and previous.get(field.key):
            value = previous[field.key]
        if not value:
            if field.required:
                raise ValidationFailedError(f"{field.key} is required", field=field.key)
            continue
        settings[field.key] = value
    try:
        return SETTINGS_MODELS[provider].model_validate(settings).model_dump()
    except ValidationError as exc:
        location = exc.errors()[0].get("loc", ())
        key = str(location[0]) if location else None
        raise ValidationFailedError(f"{key or 'settings'} is invalid", field=key) from exc


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    integrations = runtime.integrations

    # parse
    data = parse_json_object(await request.body())
    body = validate_model(SaveRequest, data)
    # Only the switch (and the name) of an existing integration: any provider, no settings in the body.
    switch_only = (body.integrationId is not None and body.isEnabled is not None and body.provider in PROVIDERS
                   and not any(field.key in data for field in PROVIDERS[body.provider].fields if field.key != "name"))
    if body.provider not in SETTINGS_MODELS and not switch_only:
        connect = PROVIDERS[body.provider].connectFunction if body.provider in PROVIDERS else None
        hint = f"; use {connect}" if connect else ""
        raise ValidationFailedError(f"provider {body.provider!r} cannot be saved here{hint}", field="provider")

    # authorize
    caller = await authenticate(request, runtime.verifier, runtime.db)

    # load
    existing = None
    if body.integrationId is not None:
        existing = await integrations.load(caller.organization_id, str(body.integrationId))
        if existing.provider != body.provider:
            raise IntegrationNotFoundError(f"This integration is not a {body.provider} integration",
                                           field="integrationId")
    settings = None if switch_only else provider_settings(body.provider, data, existing.settings if existing else {})

    # act + store (the store seals the provider's token)
    if existing is not None:
        if body.isEnabled is False and existing.is_enabled:
            await _pause_on_crm_server(runtime, caller.organization_id, existing, paused=True)
        saved = await integrations.update(caller.organization_id, existing.id, settings=settings, name=body.name,
                                          is_enabled=body.isEnabled)
        if body.isEnabled is True and not existing.is_enabled:
            try:
                await _pause_on_crm_server(runtime, caller.organization_id, saved, paused=False)
            except FunctionError:
                # Still paused there: the switch stays off here too, rather than look on while nothing arrives.
                await integrations.update(caller.organization_id, existing.id, settings=None, is_enabled=False)
                raise
    else:
        assert settings is not None
        # The organization's first Telegram integration (or the first while none is primary) becomes primary.
        saved = await integrations.insert(caller.organization_id, provider=body.provider,
                                          name=body.name or PROVIDERS[body.provider].label.en, settings=settings)
        if body.isEnabled is False:
            saved = await integrations.update(caller.organization_id, saved.id, settings=None, is_enabled=False)

    # respond (no settings: they hold the provider's token)
    return JSONResponse(SaveResponse(integrationId=saved.id, isPrimary=saved.is_primary,
                                     isEnabled=saved.is_enabled).model_dump())


async def _pause_on_crm_server(runtime: FunctionsRuntime, organization_id: str, integration: IntegrationRow,
                               *, paused: bool) -> None:
    """Pause or resume the account's delivery on crm_server (other providers have nothing to tell)."""
    if integration.provider != "telegram_crm":
        return
    settings = integration.telegram_crm_settings()
    try:
        await runtime.crm(settings).pause(project_id=organization_id, phone=settings.crmPhoneNumber, paused=paused)
    except RegistrationNotFoundError:
        pass  # nothing registered there (never connected, or removed): nothing posts, so nothing to pause
