"""The one handler behind telegram-send and telegram-crm-send (parse → authorize and load → act → store → respond,
two database round trips): the two functions differ only in which providers may send and whether a send fails over.

The send carries an Idempotency-Key and its row is stored under the same key, so a retried request sends once and
stores one row; success is never answered without the row.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timezone

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticated_user_id
from functions._shared.errors import EarlierSendUnknownError, SendOutcomeUnknownError
from functions._shared.messages import SENDING, SendClaims, store_outgoing
from functions._shared.outgoing_files import authorize_file, chat_media_file, provider_url
from functions._shared.parsing import idempotency_key, parse_json_object, validate_model
from functions._shared.rows import Provider
from functions._shared.runtime import runtime_of
from functions._shared.send_plan import prepare_send
from functions._shared.sending import SendRequest, SendResponse, replayed_response, send_with_failover


async def handle_send(request: Request, *, providers: Collection[Provider], fail_over: bool) -> JSONResponse:
    runtime = runtime_of(request)
    db = runtime.db

    # parse
    body = validate_model(SendRequest, parse_json_object(await request.body()))
    key = idempotency_key(request.headers)
    file = chat_media_file(runtime.media, body.fileUrl)
    if file is not None:
        # The row keeps the object's own URL (however the caller spelled it; a signed one's token is dropped).
        body = body.model_copy(update={"fileUrl": file.stored_url})

    # authorize and load, in one round trip: the caller's organization, the client, an earlier send under the key,
    # the route and its failover candidates; each problem is raised in the order the steps below read them
    user_id = await authenticated_user_id(request, runtime.verifier)
    plan = await prepare_send(db, runtime.integrations, user_id=user_id, client_id=str(body.clientId),
                              idempotency_key=key,
                              explicit_id=str(body.integrationId) if body.integrationId else None,
                              providers=providers, fail_over=fail_over)
    organization_id = plan.organization_id
    if file is not None:
        authorize_file(file, organization_id)  # the file is theirs to send
    client = plan.client
    earlier = plan.earlier
    if earlier is not None:
        if earlier.message_status == SENDING:
            raise EarlierSendUnknownError()  # it may have gone out: never sent again under this key
        return replayed_response(earlier)
    chosen = plan.chosen

    # act: the chosen integration, or (when allowed) once another one when the chosen one is down; a chat-media
    # file goes to the provider as a short-lived signed URL, while the row keeps the object's URL
    to_provider = body
    if file is not None:
        signed = await provider_url(runtime.media, file, expires_in=runtime.settings.media_signed_url_seconds)
        to_provider = body.model_copy(update={"fileUrl": signed})
    claims = SendClaims(db, organization_id, client, body, key)
    try:
        outcome = await send_with_failover(runtime, organization_id, chosen, client, to_provider, key, claims,
                                           failover=plan.failover_candidate)
    except SendOutcomeUnknownError as exc:
        exc.idempotency_key = key  # the caller retries with it: sent at most once
        raise
    integration, sent = outcome.integration, outcome.sent

    # store: the row and the client touched, in one round trip
    metadata: dict[str, object] = {"provider": integration.provider, "integrationId": integration.id,
                                   "sentBy": user_id, "telegramChatId": sent.chat_id,
                                   "messageId": sent.message_id}
    if outcome.failover is not None:
        metadata["failover"] = outcome.failover
    saved_id = await store_outgoing(db, organization_id=organization_id, client=client, integration=integration,
                                    request=body, sent=sent, idempotency_key=key, metadata=metadata,
                                    sent_at=datetime.now(timezone.utc), attempts=runtime.settings.store_attempts)

    # respond
    return JSONResponse(SendResponse(messageId=sent.message_id, savedMessageId=saved_id, integrationId=integration.id,
                                     provider=integration.provider,
                                     failedOver=outcome.failover is not None).model_dump())
