"""telegram-integration-remove: remove one of the organization's Telegram integrations, telling crm_server first.

crm_server drops the account's webhook registration (and logs the account out when asked) before the row goes, so
the account never keeps posting to a webhook nobody answers; the integration's messages stay, as history.
"""

from __future__ import annotations

import logging
from uuid import UUID

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import UpstreamError
from functions._shared.parsing import RequestModel, parse_json_object, validate_model
from functions._shared.runtime import runtime_of

log = logging.getLogger("functions.telegram_integration_remove")


class RemoveRequest(RequestModel):
    integrationId: UUID
    # Log the Telegram account out of crm_server too (its session is gone; a new connect needs a new login).
    logout: bool = False
    # Remove the row even when crm_server cannot be told (it is gone for good): its account may keep posting, and
    # its messages are then refused as an unknown webhook key.
    force: bool = False


class RemoveResponse(BaseModel):
    success: bool = True
    integrationId: str
    # What crm_server said: "disconnected", "logged_out", or "unreachable" when forced without it.
    crmServer: str | None = None
    # Undelivered events crm_server dropped with the registration.
    dropped: int = 0


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)

    # parse
    body = validate_model(RemoveRequest, parse_json_object(await request.body()))

    # authorize
    caller = await authenticate(request, runtime.verifier, runtime.db)

    # load: the caller's organization's integration only (another organization's id is simply not found)
    integration = await runtime.integrations.load(caller.organization_id, str(body.integrationId))

    # act: crm_server first, so a failure leaves the integration as it was
    answer = RemoveResponse(integrationId=integration.id)
    if integration.provider == "telegram_crm":
        settings = integration.telegram_crm_settings()
        try:
            told = await runtime.crm(settings).disconnect(project_id=caller.organization_id,
                                                          phone=settings.crmPhoneNumber, logout=body.logout)
        except UpstreamError as exc:
            if not body.force:
                raise
            log.warning("integration %s removed without telling crm_server (%s)", integration.id, exc.code)
            answer.crmServer = "unreachable"
        else:
            answer.crmServer = str(told.get("status") or "disconnected")
            answer.dropped = int(told.get("dropped") or 0)

    # store
    await runtime.integrations.delete(caller.organization_id, integration.id)

    # respond
    return JSONResponse(answer.model_dump())
