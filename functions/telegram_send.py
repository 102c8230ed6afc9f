"""telegram-send: the CRM's one entry point for sending to a client on Telegram, whatever the provider.

Routes by the chosen integration's provider (crm_server in-process through telegram-crm-send's logic, or Wappi.pro);
when that integration fails with a transport error or 5xx, fails over once to another enabled Telegram integration
and records which one sent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import RecipientNotFoundError, UpstreamError
from functions._shared.messages import client_and_earlier_send, store_outgoing, touch_client
from functions._shared.recipients import recipient_candidates
from functions._shared.runtime import FunctionsRuntime, runtime_of
from functions._shared.types import (
    ClientRow,
    IntegrationRow,
    SendRequest,
    SendResponse,
    SentMessage,
    idempotency_key,
    parse_json_object,
    validate_model,
)
from functions.telegram_crm_send import replayed_response, send_with_telegram_crm

log = logging.getLogger("functions.telegram_send")


async def send_with_wappi(runtime: FunctionsRuntime, integration: IntegrationRow, client: ClientRow,
                          body: SendRequest) -> SentMessage:
    """Send through Wappi.pro's sync API, trying the client's addresses in order until Telegram finds them."""
    settings = integration.wappi_settings()
    not_found: RecipientNotFoundError | None = None
    for recipient in recipient_candidates(client, "wappi"):
        try:
            if body.fileUrl:
                return await runtime.wappi.send_file_by_url(settings, recipient, body.fileUrl, caption=body.text,
                                                            file_name=body.fileName)
            return await runtime.wappi.send_text(settings, recipient, body.text or "")
        except RecipientNotFoundError as exc:
            not_found = exc
    assert not_found is not None
    raise not_found


async def send_through(runtime: FunctionsRuntime, organization_id: str, integration: IntegrationRow,
                       client: ClientRow, body: SendRequest, key: str) -> SentMessage:
    if integration.provider == "telegram_crm":
        return await send_with_telegram_crm(runtime, organization_id, integration, client, body, key)
    return await send_with_wappi(runtime, integration, client, body)


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    db = runtime.db

    # parse
    body = validate_model(SendRequest, parse_json_object(await request.body()))
    key = idempotency_key(request.headers)

    # authorize
    caller = await authenticate(request, runtime.verifier, db)

    # load
    client, earlier = await client_and_earlier_send(db, caller.organization_id, str(body.clientId), key)
    if earlier is not None:
        return replayed_response(earlier)
    chosen = await runtime.integrations.choose(caller.organization_id, client,
                                               str(body.integrationId) if body.integrationId else None)

    # act: the chosen integration, or once another one when the chosen one is down
    failover: dict[str, str] | None = None
    integration = chosen
    try:
        sent = await send_through(runtime, caller.organization_id, chosen, client, body, key)
    except UpstreamError as exc:
        backup = await runtime.integrations.failover(caller.organization_id, chosen) if exc.retryable else None
        if backup is None:
            raise
        log.warning("integration %s failed (%s); failing over to %s", chosen.id, exc.message, backup.id)
        sent = await send_through(runtime, caller.organization_id, backup, client, body, key)
        integration = backup
        failover = {"fromIntegrationId": chosen.id, "reason": exc.message}

    # store
    metadata: dict[str, object] = {"provider": integration.provider, "integrationId": integration.id,
                                   "sentBy": caller.user_id, "telegramChatId": sent.chat_id,
                                   "messageId": sent.message_id}
    if failover is not None:
        metadata["failover"] = failover
    saved_id = await store_outgoing(db, organization_id=caller.organization_id, client=client,
                                    integration=integration, request=body, sent=sent, idempotency_key=key,
                                    metadata=metadata, attempts=runtime.settings.store_attempts)
    await touch_client(db, caller.organization_id, client, sent, datetime.now(timezone.utc))

    # respond
    return JSONResponse(SendResponse(messageId=sent.message_id, savedMessageId=saved_id, integrationId=integration.id,
                                     provider=integration.provider, failedOver=failover is not None).model_dump())
