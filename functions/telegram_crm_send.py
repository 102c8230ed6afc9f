"""telegram-crm-send: a manager's message to a client, sent from a Telegram account on the CRM server.

The send carries an Idempotency-Key and its row is stored under the same key, so a retried request sends once and
stores one row; success is never answered without the row.
"""

from __future__ import annotations

from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import RecipientNotFoundError
from functions._shared.messages import client_and_earlier_send, store_outgoing, touch_client
from functions._shared.recipients import recipient_candidates
from functions._shared.runtime import FunctionsRuntime, runtime_of
from functions._shared.types import (
    ChatMessageRow,
    ClientRow,
    IntegrationRow,
    SendRequest,
    SendResponse,
    SentMessage,
    idempotency_key,
    parse_json_object,
    validate_model,
)


async def send_with_telegram_crm(runtime: FunctionsRuntime, organization_id: str, integration: IntegrationRow,
                                 client: ClientRow, body: SendRequest, key: str) -> SentMessage:
    """Send through crm_server, addressing the client by chat id, user id, username, then phone, until Telegram
    finds them. Shared with telegram-send, which calls it in-process."""
    settings = integration.telegram_crm_settings()
    crm = runtime.crm(settings)
    not_found: RecipientNotFoundError | None = None
    for to in recipient_candidates(client, "telegram_crm"):
        try:
            # The same key for every attempt: crm_server forgets a key whose send failed, and remembers one that
            # succeeded, so a retry can never send twice.
            result = await crm.send(project_id=organization_id, phone=settings.crmPhoneNumber, to=to,
                                    text=body.text, file_url=body.fileUrl, file_name=body.fileName,
                                    file_type=body.fileType, idempotency_key=key)
        except RecipientNotFoundError as exc:
            not_found = exc
            continue
        return SentMessage(message_id=result.message_id,
                           chat_id=str(result.chat_id) if result.chat_id is not None else None,
                           to_user_id=str(result.to_user_id) if result.to_user_id is not None else None)
    assert not_found is not None
    raise not_found


def replayed_response(row: ChatMessageRow) -> JSONResponse:
    """The answer to a request whose Idempotency-Key already has a stored message: the first answer again."""
    # The provider's id as it first answered it (a number from crm_server, a string from Wappi).
    return JSONResponse(SendResponse(
        messageId=row.metadata.get("messageId", row.external_message_id), savedMessageId=row.id,
        integrationId=row.integration_id or "",
        provider=row.metadata.get("provider", "telegram_crm"),
        failedOver=bool(row.metadata.get("failover"))).model_dump())


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
    integration = await runtime.integrations.choose(caller.organization_id, client,
                                                    str(body.integrationId) if body.integrationId else None,
                                                    providers=("telegram_crm",))

    # act
    sent = await send_with_telegram_crm(runtime, caller.organization_id, integration, client, body, key)

    # store
    metadata = {"provider": "telegram_crm", "integrationId": integration.id, "sentBy": caller.user_id,
                "telegramChatId": sent.chat_id, "messageId": sent.message_id}
    saved_id = await store_outgoing(db, organization_id=caller.organization_id, client=client,
                                    integration=integration, request=body, sent=sent, idempotency_key=key,
                                    metadata=metadata, attempts=runtime.settings.store_attempts)
    await touch_client(db, caller.organization_id, client, sent, datetime.now(timezone.utc))

    # respond
    return JSONResponse(SendResponse(messageId=sent.message_id, savedMessageId=saved_id, integrationId=integration.id,
                                     provider="telegram_crm").model_dump())
