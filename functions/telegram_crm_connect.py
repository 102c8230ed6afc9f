"""telegram-crm-connect: connect a Telegram account on the organization's CRM server as a messenger integration.

Registers this project's webhook on crm_server first; only when the server accepted it is the integration saved,
so a failed connect leaves nothing behind.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import (
    ConnectRefusedError,
    CrmServerAddressRefusedError,
    IntegrationMisconfiguredError,
    IntegrationNotFoundError,
    UpstreamError,
)
from functions._shared.event_types import SUBSCRIBED_TYPES
from functions._shared.parsing import RequestModel, parse_json_object, validate_model
from functions._shared.phones import normalize_phone
from functions._shared.rows import IntegrationRow, TelegramCrmSettings
from functions._shared.runtime import FunctionsRuntime, runtime_of

log = logging.getLogger("functions.telegram_crm_connect")


def _http_url(value: str) -> str:
    """A well-formed http(s) URL; which servers may be reached is decided where they are (crm_addresses.py)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an https:// URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("must not carry credentials, a query or a fragment")
    return value.rstrip("/")


class ConnectRequest(RequestModel):
    """telegram-crm-connect: where the CRM server is, its key, and the Telegram account's phone."""

    crmApiUrl: str = Field(min_length=1, max_length=2000)
    crmApiKey: str = Field(min_length=1, max_length=1000)
    crmPhoneNumber: str = Field(min_length=1, max_length=40)
    integrationId: UUID | None = None
    name: str | None = Field(None, max_length=200)

    @field_validator("crmApiUrl")
    @classmethod
    def _crm_api_url(cls, value: str) -> str:
        return _http_url(value.strip())

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


async def _unregister_previous_account(runtime: FunctionsRuntime, organization_id: str, existing: IntegrationRow,
                                       settings: TelegramCrmSettings) -> None:
    """Disconnect the account the integration pointed at before, when that was another phone or server."""
    try:
        previous = existing.telegram_crm_settings()
    except IntegrationMisconfiguredError:
        return  # settings that never connected anything
    if (previous.crmApiUrl, previous.crmPhoneNumber) == (settings.crmApiUrl, settings.crmPhoneNumber):
        return
    try:
        await runtime.crm(previous).disconnect(project_id=organization_id, phone=previous.crmPhoneNumber)
    except UpstreamError as exc:
        # The new account is connected already; the old server may be gone for good. Its messages, should it still
        # post, are keyed by their own account and cannot be mistaken for the new one's.
        log.warning("integration %s re-pointed, but its previous account could not be disconnected (%s)",
                    existing.id, exc.code)


class ConnectResponse(BaseModel):
    success: bool = True
    integrationId: str
    webhookUrl: str
    isPrimary: bool
    status: str


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    integrations = runtime.integrations

    # parse
    body = validate_model(ConnectRequest, parse_json_object(await request.body()))

    # authorize
    caller = await authenticate(request, runtime.verifier, runtime.db)

    # load: the integration to update (explicit, or the one already connected for this server and phone)
    existing: IntegrationRow | None = None
    if body.integrationId is not None:
        existing = await integrations.load(caller.organization_id, str(body.integrationId))
        if existing.provider != "telegram_crm":
            raise IntegrationNotFoundError("This integration is not a telegram_crm integration",
                                           field="integrationId")
    else:
        connected_before = await integrations.telegram_integrations(caller.organization_id)
        existing = next((integration for integration in connected_before
                         if integration.provider == "telegram_crm"
                         and integration.settings.get("crmApiUrl") == body.crmApiUrl
                         and integration.settings.get("crmPhoneNumber") == body.crmPhoneNumber), None)
    # Reconnecting to the same server keeps the webhook key and secret, so webhooks already in flight stay valid; to
    # another server it gets a new secret: the old one is never posted to a server that did not have it.
    same_server = existing is not None and existing.settings.get("crmApiUrl") == body.crmApiUrl
    webhook_key = (existing.webhook_key if existing else None) or secrets.token_urlsafe(24)
    kept_secret = existing.settings.get("secret") if existing is not None and same_server else None
    secret = str(kept_secret or secrets.token_urlsafe(32))
    webhook_url = runtime.settings.webhook_url(webhook_key)

    settings = TelegramCrmSettings(crmApiUrl=body.crmApiUrl, crmApiKey=body.crmApiKey,
                                   crmPhoneNumber=body.crmPhoneNumber, secret=secret)

    # act: crm_server registers (or updates) the webhook of (organization, phone); a URL this host may not reach is
    # refused there, before anything is sent (crm_addresses.py), and is the caller's field to fix
    crm = runtime.crm(settings)
    try:
        connected = await crm.connect(project_id=caller.organization_id, webhook_url=webhook_url,
                                      phone=body.crmPhoneNumber, secret=secret, events=SUBSCRIBED_TYPES,
                                      batch=runtime.settings.webhook_batch)
    except CrmServerAddressRefusedError:
        raise
    except UpstreamError as exc:
        # Whatever the server said, for the admin it is "the server refused": 502 (a fixed message, crm_server's code
        # when it gave one), nothing saved.
        raise ConnectRefusedError(exc) from exc

    settings = settings.model_copy(update={"signatureRequired": connected.signing == "standard-webhooks"})

    # act: a re-pointed integration's old account stops posting here (its messages would land in this integration)
    if existing is not None:
        await _unregister_previous_account(runtime, caller.organization_id, existing, settings)

    # store (the store seals the API key and the secret)
    if existing is not None:
        saved = await integrations.update(caller.organization_id, existing.id, settings=settings.model_dump(),
                                          webhook_key=webhook_key, is_enabled=True, name=body.name)
    else:
        # The organization's first Telegram integration (or the first while none is primary) becomes primary.
        saved = await integrations.insert(caller.organization_id, provider="telegram_crm",
                                          name=body.name or f"Telegram {body.crmPhoneNumber}",
                                          webhook_key=webhook_key, settings=settings.model_dump())

    # respond (settings, key and secret stay server-side)
    return JSONResponse(ConnectResponse(integrationId=saved.id, webhookUrl=webhook_url, isPrimary=saved.is_primary,
                                        status=connected.status).model_dump())
