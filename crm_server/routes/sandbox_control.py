"""The sandbox control routes (`/sandbox/*`, admin key, sandbox mode only): make simulated users act on the world.

They drive `crm_server.sandbox.SandboxWorld`; nothing here talks to Telethon.
"""

from __future__ import annotations

import base64
import binascii

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crm_server import errors
from crm_server.app_state import AppState
from crm_server.routes.auth import authenticate, require_admin
from crm_server.routes.models import (
    SandboxAccountRequest,
    SandboxDeleteRequest,
    SandboxEditRequest,
    SandboxFloodRequest,
    SandboxIncomingBulkRequest,
    SandboxIncomingMedia,
    SandboxIncomingRequest,
    SandboxOutgoingRequest,
    SandboxReadRequest,
    SandboxRevokeRequest,
    SandboxServiceMessageRequest,
    SandboxSentQuery,
    SandboxUserRequest,
)
from crm_server.routes.parsing import parse_body, parse_query, read_json_object, validate
from crm_server.routes.models import SandboxQrScanRequest  # QR login (crm_server.sandbox.qr_login)
from crm_server.sandbox.media import SimIncomingMedia
from crm_server.sandbox.world import CAPTION_LENGTH_MAX, MAX_INCOMING_FILE_BYTES, SimIncoming

# An incoming file travels as base64 inside the JSON body: 4 characters per 3 bytes, plus the other fields. A bulk
# of messages has the same limit in all: 1,000 texts of 4,096 characters fit many times over, and a bulk carries
# no more file bytes than one message may.
_INCOMING_BODY_LIMIT = 4 * -(-MAX_INCOMING_FILE_BYTES // 3) + 64 * 1024


def _sandbox_error(exc: Exception, field: str, *, user_field: str = "from") -> errors.CrmError:
    from crm_server.sandbox.errors import UnknownAccount, UnknownUser, UsernameTaken

    if isinstance(exc, UnknownAccount):
        return errors.AccountNotFoundError("No such account in the sandbox world", field=field)
    if isinstance(exc, UnknownUser):
        return errors.RecipientNotFoundError("No such simulated user", field=user_field)
    if isinstance(exc, UsernameTaken):
        return errors.ValidationError("Another simulated user has this username", field="username")
    return errors.ValidationError(str(exc), field=field)


async def _at_holder(request: Request, account_phone: str) -> Response | None:
    """The holder's answer when another instance runs the account: its live client is the one the world pushes the
    update to. A holder that does not answer is no reason to refuse: the world keeps the update for its catch-up."""
    state: AppState = request.app.state.crm
    try:
        return await state.forwarder.elsewhere_by_phone(request, account_phone)
    except errors.HolderUnreachableError:
        return None


async def _admin_state(request: Request) -> AppState:
    state: AppState = request.app.state.crm
    require_admin(await authenticate(request))
    return state


async def create_user(request: Request) -> Response:
    state = await _admin_state(request)
    body = await parse_body(request, SandboxUserRequest)
    try:
        user_id = state.world.create_user(
            body.phone,
            username=body.username.lstrip("@") if body.username else None,
            first_name=body.first_name,
            last_name=body.last_name,
            privacy_restricted=body.privacy_restricted,
        )
    except Exception as exc:
        raise _sandbox_error(exc, "phone") from None
    return JSONResponse({"user_id": user_id})


async def create_account(request: Request) -> Response:
    state = await _admin_state(request)
    body = await parse_body(request, SandboxAccountRequest)
    try:
        # The 2FA verifier is a slow KDF: keep it off the event loop.
        user_id = await run_in_threadpool(state.world.create_account, body.phone, body.password)
    except Exception as exc:
        raise _sandbox_error(exc, "phone") from None
    return JSONResponse({"user_id": user_id})


def _incoming_media(body: SandboxIncomingRequest | SandboxOutgoingRequest, *, prefix: str = ""
                    ) -> SimIncomingMedia | None:
    """The body's `media` as the world takes it; each refusal names its field (`media.kind`, `text`...), after
    `prefix` where the body sits inside another (`messages[3].`)."""
    text_field, data_field = f"{prefix}text", f"{prefix}media.data_base64"
    if body.media is None:
        if not body.text.strip():
            raise errors.ValidationError(f"`{text_field}` is required when there is no media", field=text_field)
        return None
    if len(body.text) > CAPTION_LENGTH_MAX:
        raise errors.ValidationError(f"`{text_field}`: a caption has at most {CAPTION_LENGTH_MAX} characters",
                                     field=text_field)
    media = validate(SandboxIncomingMedia, body.media, prefix=f"{prefix}media.")
    try:
        data = base64.b64decode(media.data_base64, validate=True)
    except (binascii.Error, ValueError):
        raise errors.ValidationError(f"`{data_field}` is not valid base64", field=data_field) from None
    if not data:
        raise errors.ValidationError(f"`{data_field}`: the file is empty", field=data_field)
    if len(data) > MAX_INCOMING_FILE_BYTES:
        raise errors.PayloadTooLargeError(f"The file is larger than {MAX_INCOMING_FILE_BYTES} bytes",
                                          field=data_field)
    return SimIncomingMedia(kind=media.kind, data=data, file_name=media.file_name, mime_type=media.mime_type,
                            duration=media.duration, width=media.width, height=media.height, title=media.title,
                            performer=media.performer, unavailable=media.unavailable)


async def incoming(request: Request) -> Response:
    """A simulated user writes to an account: `{account_phone, from, text, media?}`, media as
    `{kind, data_base64, file_name?, mime_type?, duration?, width?, height?, title?, performer?, unavailable?}`;
    or many write at once: `{messages: [<such a body>, ...]}` (1..1000) → `{messages: [{message_id}, ...]}`."""
    state = await _admin_state(request)
    data = await read_json_object(request, limit=_INCOMING_BODY_LIMIT, too_large_field="media.data_base64")
    if "messages" in data:
        # Not forwarded: its items may name several accounts, and the world file is shared, so each holder's
        # watcher pushes its accounts' messages (crm_server.sandbox.live).
        return _incoming_bulk(state, data)
    body = validate(SandboxIncomingRequest, data)
    if (answer := await _at_holder(request, body.account_phone)) is not None:
        return answer
    media = _incoming_media(body)
    try:
        # On the loop thread: delivery pushes updates into live Telethon clients' asyncio queues.
        message_id = state.world.incoming(body.account_phone, body.from_, body.text, media)
    except Exception as exc:
        raise _sandbox_error(exc, "account_phone") from None
    return JSONResponse({"message_id": message_id})


def _incoming_bulk(state: AppState, data: dict) -> Response:
    """Every message checked as a single call checks it (errors name `messages[i].field`), then all written in one
    transaction and pushed to the sessions one by one, as the same updates single calls push."""
    bulk = validate(SandboxIncomingBulkRequest, data)
    messages: list[SimIncoming] = []
    for index, item in enumerate(bulk.messages):
        prefix = f"messages[{index}]."
        if not isinstance(item, dict):
            raise errors.ValidationError(f"`messages[{index}]` must be an object", field=f"messages[{index}]")
        body = validate(SandboxIncomingRequest, item, prefix=prefix)
        messages.append(SimIncoming(body.account_phone, body.from_, body.text, _incoming_media(body, prefix=prefix)))
    from crm_server.sandbox.errors import IncomingItemError

    try:
        # On the loop thread, as a single call: delivery pushes updates into live Telethon clients' queues.
        ids = state.world.incoming_many(messages)
    except IncomingItemError as exc:
        raise _sandbox_error(exc.error, f"messages[{exc.index}].account_phone",
                             user_field=f"messages[{exc.index}].from") from None
    except Exception as exc:
        raise _sandbox_error(exc, "messages") from None
    return JSONResponse({"messages": [{"message_id": message_id} for message_id in ids]})


async def outgoing(request: Request) -> Response:
    """The account's owner writes from another device: `{account_phone, to, text, media?}` (media as incoming)."""
    state = await _admin_state(request)
    body = await parse_body(request, SandboxOutgoingRequest, limit=_INCOMING_BODY_LIMIT,
                            too_large_field="media.data_base64")
    if (answer := await _at_holder(request, body.account_phone)) is not None:
        return answer
    media = _incoming_media(body)
    try:
        message_id = state.world.outgoing(body.account_phone, body.to, body.text, media)
    except Exception as exc:
        raise _sandbox_error(exc, "account_phone", user_field="to") from None
    return JSONResponse({"message_id": message_id})


async def edit(request: Request) -> Response:
    """`{account_phone, from, message_id, text}`: the message's author edits it (updateEditMessage)."""
    state = await _admin_state(request)
    body = await parse_body(request, SandboxEditRequest)
    if (answer := await _at_holder(request, body.account_phone)) is not None:
        return answer
    try:
        update = state.world.edit(body.account_phone, body.from_, body.message_id, body.text)
    except Exception as exc:
        raise _sandbox_error(exc, "message_id") from None
    return JSONResponse({"pts": update.pts})


async def delete(request: Request) -> Response:
    """`{account_phone, message_ids, revoke?}`: updateDeleteMessages, with no chat id, as Telegram sends it."""
    state = await _admin_state(request)
    body = await parse_body(request, SandboxDeleteRequest)
    if (answer := await _at_holder(request, body.account_phone)) is not None:
        return answer
    try:
        update = state.world.delete(body.account_phone, body.message_ids, body.revoke)
    except Exception as exc:
        raise _sandbox_error(exc, "account_phone") from None
    return JSONResponse({"pts": update.pts if update is not None else None})


async def read(request: Request) -> Response:
    """`{account_phone, from, max_id, peer?}`: `from` the client → it read the account's messages (outbox);
    `from` the account itself with `peer` → its owner read that chat on another device (inbox)."""
    state = await _admin_state(request)
    body = await parse_body(request, SandboxReadRequest)
    if (answer := await _at_holder(request, body.account_phone)) is not None:
        return answer
    try:
        update = state.world.read(body.account_phone, body.from_, body.max_id, body.peer)
    except Exception as exc:
        raise _sandbox_error(exc, "peer" if body.peer is None else "account_phone") from None
    return JSONResponse({"pts": update.pts})


async def reads(request: Request) -> Response:
    state = await _admin_state(request)
    query = parse_query(request, SandboxSentQuery)
    try:
        entries = state.world.reads(query.account_phone)
    except Exception as exc:
        raise _sandbox_error(exc, "account_phone") from None
    return JSONResponse(entries)


async def service_message(request: Request) -> Response:
    """`{account_phone, text}`: Telegram's service user (777000) writes, e.g. a login code."""
    state = await _admin_state(request)
    body = await parse_body(request, SandboxServiceMessageRequest)
    if (answer := await _at_holder(request, body.account_phone)) is not None:
        return answer
    try:
        message_id = state.world.service_message(body.account_phone, body.text)
    except Exception as exc:
        raise _sandbox_error(exc, "account_phone") from None
    return JSONResponse({"message_id": message_id})


async def sent(request: Request) -> Response:
    state = await _admin_state(request)
    query = parse_query(request, SandboxSentQuery)
    try:
        messages = state.world.sent(query.account_phone)
    except Exception as exc:
        raise _sandbox_error(exc, "account_phone") from None
    return JSONResponse(messages)


async def qr_scan(request: Request) -> Response:
    """A logged-in phone of the world scans a QR login code (`{url, phone}`), as its Telegram app would."""
    from crm_server.sandbox import qr_login

    state = await _admin_state(request)
    body = await parse_body(request, SandboxQrScanRequest)
    try:
        user_id = qr_login.scan(state.world, body.url, body.phone, notify=body.push)
    except qr_login.TokenExpired:
        raise errors.LoginTokenRefusedError("AUTH_TOKEN_EXPIRED", "The QR code expired", field="url") from None
    except qr_login.TokenAlreadyAccepted:
        raise errors.LoginTokenRefusedError("AUTH_TOKEN_ALREADY_ACCEPTED", "The QR code was already scanned",
                                            field="url") from None
    except (qr_login.TokenInvalid, ValueError):
        raise errors.LoginTokenRefusedError("AUTH_TOKEN_INVALID", field="url") from None
    except Exception as exc:
        raise _sandbox_error(exc, "phone") from None
    return JSONResponse({"status": "accepted", "user_id": user_id})


async def flood(request: Request) -> Response:
    state = await _admin_state(request)
    body = await parse_body(request, SandboxFloodRequest)
    if (answer := await _at_holder(request, body.account_phone)) is not None:
        return answer
    try:
        state.world.flood(body.account_phone, body.seconds)
    except Exception as exc:
        raise _sandbox_error(exc, "account_phone") from None
    return JSONResponse({"status": "ok"})


async def revoke(request: Request) -> Response:
    """Terminate the account's sessions, as when the user ends them from another device."""
    state = await _admin_state(request)
    body = await parse_body(request, SandboxRevokeRequest)
    if (answer := await _at_holder(request, body.account_phone)) is not None:
        return answer
    try:
        state.world.revoke(body.account_phone)
    except Exception as exc:
        raise _sandbox_error(exc, "account_phone") from None
    return JSONResponse({"status": "ok"})


async def gap(request: Request) -> Response:
    """`{account_phone}`: the account's next catch-up that has something to fetch answers differenceTooLong."""
    state = await _admin_state(request)
    body = await parse_body(request, SandboxRevokeRequest)
    if (answer := await _at_holder(request, body.account_phone)) is not None:
        return answer
    try:
        state.world.force_gap(body.account_phone)
    except Exception as exc:
        raise _sandbox_error(exc, "account_phone") from None
    return JSONResponse({"status": "ok"})


async def request_counts(request: Request) -> Response:
    """How many requests of each TL type the world answered: shows what Telethon really asked for."""
    state = await _admin_state(request)
    return JSONResponse({"counts": dict(state.world.request_counts)})


routes = [
    Route("/sandbox/qr-scan", qr_scan, methods=["POST"]),
    Route("/sandbox/users", create_user, methods=["POST"]),
    Route("/sandbox/accounts", create_account, methods=["POST"]),
    Route("/sandbox/incoming", incoming, methods=["POST"]),
    Route("/sandbox/outgoing", outgoing, methods=["POST"]),
    Route("/sandbox/edit", edit, methods=["POST"]),
    Route("/sandbox/delete", delete, methods=["POST"]),
    Route("/sandbox/read", read, methods=["POST"]),
    Route("/sandbox/reads", reads, methods=["GET"]),
    Route("/sandbox/service-message", service_message, methods=["POST"]),
    Route("/sandbox/sent", sent, methods=["GET"]),
    Route("/sandbox/flood", flood, methods=["POST"]),
    Route("/sandbox/revoke", revoke, methods=["POST"]),
    Route("/sandbox/gap", gap, methods=["POST"]),
    Route("/sandbox/requests", request_counts, methods=["GET"]),
]
