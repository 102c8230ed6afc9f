"""The contract's routes of crm_server: connect, send, status, login, logout, health, metrics.

Each endpoint reads top to bottom: authenticate → parse → authorize the project → act → respond.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from crm_server import errors
from crm_server.app_state import AppState
from crm_server.idempotency import SendCompletion
from crm_server.routes.auth import authenticate, require_admin, require_project
from crm_server.routes.deliveries import iso
from crm_server.metrics import CONTENT_TYPE_LATEST
from crm_server.routes.models import (
    AccountPath,
    AccountQuery,
    AccountStatusEntry,
    AccountSummary,
    BatchInfo,
    ConnectRequest,
    ReadRequest,
    ReadResponse,
    ConnectResponse,
    DisconnectRequest,
    DisconnectResponse,
    HealthResponse,
    HistoryImportRequest,
    HistoryImportResponse,
    HistoryJobPath,
    HistoryJobResponse,
    LogoutResponse,
    PasswordRequest,
    PasswordResponse,
    PauseRequest,
    QrLoginError,
    QrLoginQuery,
    QrLoginRequest,
    QrLoginResponse,
    QrLoginStatusResponse,
    PauseResponse,
    SendCodeRequest,
    SendCodeResponse,
    SendRequest,
    SendResponse,
    SignInRequest,
    SignInResponse,
    StatusQuery,
    StatusResponse,
    WebhookStatus,
)
from crm_server.routes.parsing import parse_body, parse_path, parse_query
from crm_server.telegram.qr_login import QrView
from crm_server.telegram.recipients import parse_recipient
from crm_server.telegram.sending import SendResult
from crm_server.outbound_addresses import validate_webhook_url

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _state(request: Request) -> AppState:
    return request.app.state.crm  # type: ignore[no-any-return]


async def _held_elsewhere(request: Request, project_id: str, phone: str) -> Response | None:
    """The answer of the instance holding the account, when another does (crm_server.cluster.forwarding)."""
    return await _state(request).forwarder.elsewhere(request, project_id, phone)


def _json(model: object, status_code: int = 200, **kwargs: object) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", **kwargs), status_code=status_code)  # type: ignore[attr-defined]


async def connect(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, ConnectRequest)
    require_project(principal, body.project_id)
    webhook_url = await validate_webhook_url(body.webhook_url, state.webhook_policy)
    account = await state.manager.register(body.project_id, body.phone)
    # Without a secret in the body, an existing registration keeps its secret; a new one gets a generated
    # secret, returned once in this response (the receiver needs it to check deliveries).
    batch = body.batch_settings()
    registered = await state.webhooks.register(body.project_id, body.phone, webhook_url, body.secret or None,
                                               secret_header=body.secret_header, events=body.event_types(),
                                               batch=batch)
    generated_secret = registered.generated_secret
    response = ConnectResponse(
        status="connected" if account.authorized else "auth_required",
        project_id=body.project_id,
        phone=body.phone,
        webhook_url=webhook_url,
        account=AccountSummary(authorized=account.authorized, user_id=account.user_id, username=account.username),
        secret=generated_secret,
        batch=BatchInfo.of(registered.batch),
    )
    return _json(response, exclude={"secret"} if generated_secret is None else None)


async def pause(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, PauseRequest)
    require_project(principal, body.project_id)
    pending = await state.webhooks.pause(body.project_id, body.phone, body.paused)
    if pending is None:
        raise errors.RegistrationNotFoundError(field="phone")
    return _json(PauseResponse(status="paused" if body.paused else "active", pending=pending))


async def disconnect(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, DisconnectRequest)
    require_project(principal, body.project_id)
    # Idempotent: disconnecting what is not registered (any more) is done already; a caller may retry.
    if body.logout and (answer := await _held_elsewhere(request, body.project_id, body.phone)) is not None:
        return answer  # the holder logs its client out
    dropped = await state.webhooks.disconnect(body.project_id, body.phone)
    if body.logout:
        with contextlib.suppress(errors.AccountNotFoundError):
            await state.manager.logout(body.project_id, body.phone)
    return _json(DisconnectResponse(status="logged_out" if body.logout else "disconnected", dropped=dropped))


async def send(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, SendRequest)
    require_project(principal, body.project_id)
    if body.file_url is None and not (body.text or "").strip():
        # Without a file there must be a text; with one, the text is its caption and may be empty.
        raise errors.ValidationError("`text` is required (or `file_url`)", field="text")
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise errors.ValidationError("Idempotency-Key must be 1..255 visible ASCII characters", field="Idempotency-Key")
    # Before the idempotency claim: the holder claims the key (the store is shared, so a replay is found either way).
    if (answer := await _held_elsewhere(request, body.project_id, body.phone)) is not None:
        return answer

    if idempotency_key is not None:
        replay = await state.idempotency.replay_or_claim(body.project_id, idempotency_key)
        if replay is not None:
            return JSONResponse(replay, headers={"Idempotent-Replayed": "true"})

    started = time.perf_counter()
    file = None
    # With a key, the manager completes it with the answer in the transaction that remembers the message.
    completing = SendCompletion(idempotency_key, _send_answer) if idempotency_key is not None else None
    try:
        if body.file_url is not None:
            # Fetched by us (guarded, size-limited), uploaded by Telethon: Telegram never sees the URL.
            file = await state.outgoing_files.fetch(body.file_url, kind=body.file_type or "document",
                                                    file_name=body.file_name)
        result = await state.manager.send(
            body.project_id,
            body.phone,
            parse_recipient(body.to),
            body.text,
            file=file,
            reply_to=body.reply_to,
            completing=completing,
        )
    except BaseException as exc:
        if idempotency_key is not None:
            # Failed sends are not remembered: the caller may retry with the same key.
            await state.idempotency.release(body.project_id, idempotency_key)
        state.metrics.sends.labels(getattr(exc, "code", "INTERNAL_ERROR")).inc()
        raise
    finally:
        if file is not None:
            file.discard()
    state.metrics.send_seconds.observe(time.perf_counter() - started)
    state.metrics.sends.labels("sent").inc()
    payload = completing.answer if completing is not None and completing.answer is not None else _send_answer(result)
    return JSONResponse(payload)


def _send_answer(result: SendResult) -> dict[str, Any]:
    """The success answer of `/telegram/send` (also what a replay of its Idempotency-Key answers)."""
    return SendResponse(
        status="sent",
        message_id=result.message_id,
        chat_id=result.chat_id,
        to_user_id=result.to_user_id,
        date=result.date.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
    ).model_dump(mode="json")


async def read(request: Request) -> Response:
    """Mark the client's messages of a chat read up to `max_id` (messages.readHistory): the client sees the ticks."""
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, ReadRequest)
    require_project(principal, body.project_id)
    if (answer := await _held_elsewhere(request, body.project_id, body.phone)) is not None:
        return answer
    await state.manager.mark_read(body.project_id, body.phone, parse_recipient(body.chat), body.max_id)
    return _json(ReadResponse(status="read"))


async def import_history(request: Request) -> Response:
    """Start importing an account's recent private conversations; 202 with the job's id to poll."""
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, HistoryImportRequest)
    require_project(principal, body.project_id)
    if (answer := await _held_elsewhere(request, body.project_id, body.phone)) is not None:
        return answer
    job = await state.manager.import_history(body.project_id, body.phone, body.per_chat,
                                             body.since)  # type: ignore[arg-type]
    return JSONResponse(HistoryImportResponse(job_id=job.job_id).model_dump(mode="json"), status_code=202)


async def history_job(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    path = parse_path(request, HistoryJobPath)
    job = await state.manager.history_job(path.job_id)
    if job is None or not principal.may_access(job.project_id):
        # Another project's job is as unknown as a missing one: its existence is not told.
        raise errors.HistoryJobNotFoundError(field="job_id")
    return _json(HistoryJobResponse(job_id=job.job_id, state=job.state, dialogs=job.dialogs,  # type: ignore[arg-type]
                                    messages=job.messages, error=job.error))


async def status(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    query = parse_query(request, StatusQuery)
    require_project(principal, query.project_id)
    accounts = await state.manager.status(query.project_id, query.phone)
    webhooks = await state.webhooks.statuses(query.project_id, query.phone)
    entries = []
    for account in accounts:
        registration = webhooks.get(account.phone)
        webhook = None
        if registration is not None:
            health = registration.health
            webhook = WebhookStatus(
                url=registration.url,
                enabled=registration.enabled,
                paused=registration.paused,
                events=list(registration.events),
                batch=BatchInfo.of(registration.batch),
                pending=health.pending,
                failed=health.dead,
                last_success_at=iso(health.last_success_at),
                last_error=health.last_error,
            )
        entries.append(
            AccountStatusEntry(
                phone=account.phone,
                authorized=account.authorized,
                connected=account.connected,
                state=account.state,
                user_id=account.user_id,
                username=account.username,
                webhook=webhook,
            )
        )
    return _json(StatusResponse(accounts=entries))


async def send_code(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, SendCodeRequest)
    require_project(principal, body.project_id)
    if (answer := await _held_elsewhere(request, body.project_id, body.phone)) is not None:
        return answer
    timeout = await state.manager.send_code(body.project_id, body.phone)
    return _json(SendCodeResponse(status="code_sent", timeout=timeout))


async def sign_in(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, SignInRequest)
    require_project(principal, body.project_id)
    if (answer := await _held_elsewhere(request, body.project_id, body.phone)) is not None:
        return answer
    outcome = await state.manager.sign_in(body.project_id, body.phone, body.code.strip())
    return _json(SignInResponse(status=outcome))


async def password(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, PasswordRequest)
    require_project(principal, body.project_id)
    if body.login_id is not None:
        answer = await state.forwarder.qr_elsewhere(request, body.login_id, state.manager.qr_logins.has)
        if answer is not None:
            return answer
        outcome = await state.manager.check_qr_password(body.project_id, body.login_id, body.password)
    elif body.phone is not None:
        if (answer := await _held_elsewhere(request, body.project_id, body.phone)) is not None:
            return answer
        outcome = await state.manager.check_password(body.project_id, body.phone, body.password)
    else:
        raise errors.ValidationError("`phone` is required (or `login_id` for a QR login)", field="phone")
    return _json(PasswordResponse(status=outcome))


def _qr_status(view: QrView) -> QrLoginStatusResponse:
    error = view.error
    return QrLoginStatusResponse(
        status=view.status.value,  # type: ignore[arg-type]
        url=view.url,
        expires_at=iso(view.expires_at.timestamp()) if view.expires_at is not None else None,
        phone=view.phone,
        error=QrLoginError(code=error.code, message=error.message, field=error.field) if error is not None else None,
    )


async def start_qr_login(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    body = await parse_body(request, QrLoginRequest)
    require_project(principal, body.project_id)
    view = await state.manager.start_qr_login(body.project_id, body.phone)
    assert view.url is not None and view.expires_at is not None
    return _json(QrLoginResponse(login_id=view.login_id, status="qr", url=view.url,
                                 expires_at=iso(view.expires_at.timestamp()) or ""))


async def qr_login_status(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    query = parse_query(request, QrLoginQuery)
    require_project(principal, query.project_id)
    answer = await state.forwarder.qr_elsewhere(request, query.login_id, state.manager.qr_logins.has)
    if answer is not None:
        return answer
    return _json(_qr_status(state.manager.qr_login_status(query.project_id, query.login_id)), exclude_none=True)


async def logout(request: Request) -> Response:
    state = _state(request)
    principal = await authenticate(request)
    path = parse_path(request, AccountPath)
    query = parse_query(request, AccountQuery)
    require_project(principal, query.project_id)
    if (answer := await _held_elsewhere(request, query.project_id, path.phone)) is not None:
        return answer
    await state.manager.logout(query.project_id, path.phone)
    await state.webhooks.disconnect(query.project_id, path.phone)
    return _json(LogoutResponse(status="logged_out"))


async def health(request: Request) -> Response:
    """Up or not for anyone (a load balancer has no key); the counts, which span every tenant, for the admin."""
    state = _state(request)
    if request.headers.get("x-api-key") is None:
        return _json(HealthResponse(status="ok"), exclude_none=True)
    principal = await authenticate(request)
    if not principal.is_admin:
        return _json(HealthResponse(status="ok"), exclude_none=True)
    pending = await state.deliveries.pending_count()
    return _json(HealthResponse(status="ok", accounts_connected=state.manager.connected_count(), outbox_pending=pending,
                                instance_id=state.manager.owner_id, accounts_held=state.manager.held_count()))


async def metrics(request: Request) -> Response:
    state = _state(request)
    require_admin(await authenticate(request))  # counts across every tenant
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
