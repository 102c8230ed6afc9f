"""telegram-crm-status: what crm_server says about each Telegram integration of the caller's organization.

For the admin page's list: logged in or not, connected, the account's username, and the webhook's delivery health.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import FunctionError
from functions._shared.runtime import FunctionsRuntime, runtime_of
from functions._shared.parsing import RequestModel, parse_json_object, validate_model
from functions._shared.rows import IntegrationRow


class StatusRequest(RequestModel):
    integrationId: UUID | None = None


class IntegrationStatus(BaseModel):
    integrationId: str
    provider: str
    # telegram_crm: "authorized" | "not_authorized" | "not_on_server" | "error"; wappi: "not_checked".
    state: str
    authorized: bool | None = None
    connected: bool | None = None
    phone: str | None = None
    username: str | None = None
    webhook: dict[str, Any] | None = None
    error: str | None = None
    # What the account's last account.status event said (logged_out, ...), and when: known even while crm_server
    # is unreachable.
    accountState: str | None = None
    accountStateReason: str | None = None
    lastStatusAt: str | None = None


def reported_state(integration: IntegrationRow) -> dict[str, Any]:
    at = integration.account_state_at
    return {"accountState": integration.account_state, "accountStateReason": integration.account_state_reason,
            "lastStatusAt": at.isoformat() if at is not None else None}


class StatusResponse(BaseModel):
    success: bool = True
    integrations: list[IntegrationStatus]


async def status_of(runtime: FunctionsRuntime, organization_id: str, integration: IntegrationRow) -> IntegrationStatus:
    status = await _asked_status(runtime, organization_id, integration)
    return status.model_copy(update=reported_state(integration))


async def _asked_status(runtime: FunctionsRuntime, organization_id: str,
                        integration: IntegrationRow) -> IntegrationStatus:
    if integration.provider != "telegram_crm":
        # Wappi's own dashboard shows its profile's state; nothing to ask here.
        return IntegrationStatus(integrationId=integration.id, provider=integration.provider, state="not_checked")
    try:
        settings = integration.telegram_crm_settings()
        answer = await runtime.crm(settings).status(project_id=organization_id, phone=settings.crmPhoneNumber)
    except FunctionError as exc:
        # One unreachable server must not hide the other integrations' status.
        return IntegrationStatus(integrationId=integration.id, provider=integration.provider, state="error",
                                 error=exc.message)
    accounts = answer.get("accounts") if isinstance(answer.get("accounts"), list) else []
    account = next((entry for entry in accounts if isinstance(entry, dict)
                    and entry.get("phone") == settings.crmPhoneNumber), None)
    if account is None:
        return IntegrationStatus(integrationId=integration.id, provider=integration.provider, state="not_on_server",
                                 phone=settings.crmPhoneNumber)
    authorized = bool(account.get("authorized"))
    return IntegrationStatus(
        integrationId=integration.id, provider=integration.provider,
        state="authorized" if authorized else "not_authorized", authorized=authorized,
        connected=bool(account.get("connected")), phone=settings.crmPhoneNumber, username=account.get("username"),
        webhook=_delivery_health(account.get("webhook")))


def _delivery_health(webhook: object) -> dict[str, Any] | None:
    """The webhook's delivery counters, without its URL (the URL carries the integration's webhook key)."""
    if not isinstance(webhook, dict):
        return None
    return {name: webhook.get(name) for name in ("pending", "failed", "paused", "last_success_at", "last_error")}


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)

    # parse: GET ?integrationId= or a POST body {integrationId}; none means every integration
    if request.method == "POST":
        data = parse_json_object(await request.body() or b"{}")
    else:
        data = dict(request.query_params)
    body = validate_model(StatusRequest, data)

    # authorize
    caller = await authenticate(request, runtime.verifier, runtime.db)

    # load
    if body.integrationId is not None:
        integrations = [await runtime.integrations.load(caller.organization_id, str(body.integrationId))]
    else:
        integrations = await runtime.integrations.telegram_integrations(caller.organization_id)

    # act: ask the servers concurrently
    statuses = await asyncio.gather(*(status_of(runtime, caller.organization_id, integration)
                                      for integration in integrations))

    # respond
    return JSONResponse(StatusResponse(integrations=statuses).model_dump())
