"""telegram-crm-mark-read: a manager opened a client's chat (the admin page), so Telegram marks it read up to the
client's latest message there (crm_server's `POST /telegram/read`: the client sees the double tick) and the CRM
marks those incoming rows read.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.database import rows
from functions._shared.errors import IntegrationNotFoundError
from functions._shared.event_rpc import event_rpc
from functions._shared.integrations import load_client
from functions._shared.parsing import RequestModel, parse_json_object, validate_model
from functions._shared.rows import IntegrationRow
from functions._shared.runtime import FunctionsRuntime, runtime_of

# The latest incoming messages looked at: the newest Telegram id among them is "up to here" (rows are ordered by
# arrival, which a redelivered or imported older message can disturb a little).
RECENT_MESSAGES = 20


class MarkReadRequest(RequestModel):
    clientId: UUID
    integrationId: UUID | None = None


class MarkReadResponse(BaseModel):
    success: bool = True
    # None when the client has no incoming Telegram message (nothing to mark).
    maxId: int | None = None
    integrationId: str | None = None
    marked: int = 0


async def latest_incoming(runtime: FunctionsRuntime, organization_id: str, client_id: str,
                          account: str | None) -> tuple[str, str, int] | None:
    """(account phone, chat, Telegram id) of the client's newest incoming Telegram message, through `account` when
    the caller chose one."""
    query = (runtime.db.table("chat_messages").select("external_account, external_chat_id, external_message_id")
             .eq("organization_id", organization_id).eq("client_id", client_id).eq("is_outgoing", False)
             .not_.is_("external_account", "null").not_.is_("external_chat_id", "null"))
    if account is not None:
        query = query.eq("external_account", account)
    found = await rows(query.order("created_at", desc=True).limit(RECENT_MESSAGES), "finding the latest message")
    numbered = [(row["external_account"], row["external_chat_id"], int(row["external_message_id"]))
                for row in found if str(row.get("external_message_id") or "").isdigit()]
    if not numbered:
        return None
    newest_account, newest_chat, _ = numbered[0]
    return max((entry for entry in numbered if entry[:2] == (newest_account, newest_chat)), key=lambda e: e[2])


async def account_integration(runtime: FunctionsRuntime, organization_id: str, phone: str) -> IntegrationRow:
    """The organization's enabled telegram_crm integration of this account."""
    for integration in await runtime.integrations.telegram_integrations(organization_id):
        if (integration.provider == "telegram_crm" and integration.is_enabled
                and integration.settings.get("crmPhoneNumber") == phone):
            return integration
    raise IntegrationNotFoundError("No enabled telegram_crm integration has this client's chat",
                                   field="integrationId")


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)

    # parse
    body = validate_model(MarkReadRequest, parse_json_object(await request.body()))

    # authorize
    caller = await authenticate(request, runtime.verifier, runtime.db)

    # load: the client (another organization's is 404), the chosen integration, the message to read up to
    client = await load_client(runtime.db, caller.organization_id, str(body.clientId))
    chosen = None
    if body.integrationId is not None:
        chosen = await runtime.integrations.load(caller.organization_id, str(body.integrationId))
        if chosen.provider != "telegram_crm":
            raise IntegrationNotFoundError("This integration is not a telegram_crm integration",
                                           field="integrationId")
    latest = await latest_incoming(runtime, caller.organization_id, client.id,
                                   chosen.telegram_crm_settings().crmPhoneNumber if chosen else None)
    if latest is None:
        return JSONResponse(MarkReadResponse().model_dump())
    phone, chat, max_id = latest
    integration = chosen or await account_integration(runtime, caller.organization_id, phone)
    settings = integration.telegram_crm_settings()

    # act: Telegram first, so the CRM never says "read" for a chat the client still sees unread
    await runtime.crm(settings).read(project_id=caller.organization_id, phone=phone, chat=chat, max_id=max_id)

    # store: as a message.read inbox event would (the same rpc: the mark holds for rows stored later too)
    result: dict[str, Any] = await event_rpc(runtime.db, "apply_telegram_read", {
        "p_organization_id": caller.organization_id, "p_integration_id": integration.id,
        "p_account_phone": phone, "p_telegram_chat_id": chat, "p_direction": "inbox", "p_max_id": max_id,
    }, "marking the chat read")

    # respond
    return JSONResponse(MarkReadResponse(maxId=max_id, integrationId=integration.id,
                                         marked=int(result.get("updated", 0))).model_dump())
