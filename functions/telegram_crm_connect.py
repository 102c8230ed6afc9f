"""telegram-crm-connect: connect a Telegram account on the organization's CRM server as a messenger integration.

Registers this project's webhook on crm_server first; only when the server accepted it is the integration saved,
so a failed connect leaves nothing behind.
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.database import UNIQUE_VIOLATION, first_row
from functions._shared.errors import DatabaseError, IntegrationNotFoundError, UpstreamError
from functions._shared.integrations import MESSENGER, load_integration, telegram_integrations
from functions._shared.runtime import runtime_of
from functions._shared.types import (
    ConnectRequest,
    ConnectResponse,
    IntegrationRow,
    TelegramCrmSettings,
    parse_json_object,
    validate_model,
)


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    db = runtime.db

    # parse
    body = validate_model(ConnectRequest, parse_json_object(await request.body()),
                          context={"allow_http_loopback": runtime.settings.crm_allow_http_loopback})

    # authorize
    caller = await authenticate(request, runtime.verifier, db)

    # load: the integration to update (explicit, or the one already connected for this server and phone)
    existing_integrations = await telegram_integrations(db, caller.organization_id)
    existing: IntegrationRow | None = None
    if body.integrationId is not None:
        existing = await load_integration(db, caller.organization_id, str(body.integrationId))
        if existing.provider != "telegram_crm":
            raise IntegrationNotFoundError("This integration is not a telegram_crm integration",
                                           field="integrationId")
    else:
        existing = next((integration for integration in existing_integrations
                         if integration.provider == "telegram_crm"
                         and integration.settings.get("crmApiUrl") == body.crmApiUrl
                         and integration.settings.get("crmPhoneNumber") == body.crmPhoneNumber), None)
    # Reconnecting keeps the webhook key and secret, so webhooks already in flight stay valid.
    webhook_key = (existing.webhook_key if existing else None) or secrets.token_urlsafe(24)
    secret = str((existing.settings.get("secret") if existing else None) or secrets.token_urlsafe(32))
    webhook_url = runtime.settings.webhook_url(webhook_key)

    # act: crm_server registers (or updates) the webhook of (organization, phone)
    crm = runtime.crm(TelegramCrmSettings(crmApiUrl=body.crmApiUrl, crmApiKey=body.crmApiKey,
                                          crmPhoneNumber=body.crmPhoneNumber, secret=secret))
    try:
        connected = await crm.connect(project_id=caller.organization_id, webhook_url=webhook_url,
                                      phone=body.crmPhoneNumber, secret=secret)
    except UpstreamError as exc:
        # Whatever the server said, for the admin it is "the server refused": 502 with its message, nothing saved.
        raise UpstreamError(exc.message, code=exc.code, status_code=502) from exc

    # store
    settings = TelegramCrmSettings(crmApiUrl=body.crmApiUrl, crmApiKey=body.crmApiKey,
                                   crmPhoneNumber=body.crmPhoneNumber, secret=secret).model_dump()
    if existing is not None:
        changes: dict[str, object] = {"settings": settings, "webhook_key": webhook_key, "is_enabled": True}
        if body.name is not None:
            changes["name"] = body.name
        saved = await first_row(
            db.table("messenger_integrations").update(changes).eq("id", existing.id)
            .eq("organization_id", caller.organization_id), "saving the integration")
        if saved is None:
            raise DatabaseError("The integration disappeared while it was being saved")
    else:
        # The organization's first Telegram integration (or the first while none is primary) becomes primary.
        becomes_primary = not any(integration.is_primary for integration in existing_integrations)
        row = {"organization_id": caller.organization_id, "messenger_type": MESSENGER, "provider": "telegram_crm",
               "name": body.name or f"Telegram {body.crmPhoneNumber}", "is_primary": becomes_primary,
               "is_enabled": True, "webhook_key": webhook_key, "settings": settings}
        try:
            saved = await first_row(db.table("messenger_integrations").insert(row), "saving the integration")
        except DatabaseError as exc:
            if not (becomes_primary and exc.pg_code == UNIQUE_VIOLATION):
                raise
            # A concurrent connect became primary first: this one is a secondary integration.
            saved = await first_row(db.table("messenger_integrations").insert({**row, "is_primary": False}),
                                    "saving the integration")
        if saved is None:
            raise DatabaseError("The database did not return the saved integration")

    # respond (settings, key and secret stay server-side)
    return JSONResponse(ConnectResponse(integrationId=str(saved["id"]), webhookUrl=webhook_url,
                                        isPrimary=bool(saved["is_primary"]), status=connected.status).model_dump())
