"""telegram-crm-auth: log the Telegram account of a telegram_crm integration in, one step per call (the admin page):
by code (send-code, sign-in, password) or by QR code (qr, then qr-status polls; password when 2FA asks for it).

The browser sends the integration id and what the person typed; the integration's crm_server key never leaves here.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import CRM_SERVER_CODES, CrmServerRejectedError, IntegrationNotFoundError
from functions._shared.runtime import runtime_of
from functions._shared.parsing import RequestModel, parse_json_object, validate_model
from functions._shared.qr_svg import qr_svg

Step = Literal["send-code", "sign-in", "password", "qr", "qr-status"]


class AuthRequest(RequestModel):
    """Which integration, which step, and the code or 2FA password the step needs."""

    integrationId: UUID
    step: Step
    code: str | None = Field(None, max_length=32)
    password: str | None = Field(None, max_length=256)
    # The QR login the qr step started (qr-status; password after a QR code was scanned by an account with 2FA).
    loginId: str | None = Field(None, min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")

    @model_validator(mode="after")
    def _step_input(self) -> AuthRequest:
        if self.step == "sign-in" and not (self.code or "").strip():
            raise ValueError("code is required for the sign-in step")
        if self.step == "password" and not self.password:
            raise ValueError("password is required for the password step")
        if self.step == "qr-status" and not self.loginId:
            raise ValueError("loginId is required for the qr-status step")
        return self


class QrLoginError(BaseModel):
    """Why a QR login ended before it logged in (crm_server's code, our words)."""

    code: str
    message: str


class AuthResponse(BaseModel):
    success: bool = True
    # code_sent | authorized | password_required; for a QR login also qr | expired
    status: str
    phone: str
    timeout: int | None = None
    # A QR login: its id (for qr-status), and while `qr` the code to show: its URL, when it runs out (it is
    # refreshed before: poll qr-status and show the newest), and the image, drawn here (SVG).
    loginId: str | None = None
    url: str | None = None
    expiresAt: str | None = None
    qrSvg: str | None = None
    error: QrLoginError | None = None


def _qr_error(error: object) -> QrLoginError | None:
    """crm_server's reason a QR login ended, under its code when it is one of the codes we relay, in our words."""
    if not isinstance(error, dict):
        return None
    relayed = CRM_SERVER_CODES.get(str(error.get("code")))
    if relayed is None:
        return QrLoginError(code="CRM_SERVER_ERROR", message="The CRM Telegram server ended the QR login")
    return QrLoginError(code=relayed.code, message=relayed.default_message)


QR_STATUSES = frozenset({"qr", "password_required", "authorized", "expired"})


def _qr_response(answer: dict, phone: str, login_id: str) -> AuthResponse:
    status = str(answer.get("status", ""))
    if status not in QR_STATUSES or not login_id:
        raise CrmServerRejectedError("The CRM Telegram server answered a QR login step in an unexpected shape",
                                     upstream_status=200)
    url = answer.get("url") if status == "qr" else None
    if url is not None and not (isinstance(url, str) and url.startswith("tg://login?token=") and len(url) <= 256):
        url = None  # only a login URL is ever drawn: a server that is not crm_server cannot make us draw its text
    expires_at = answer.get("expires_at")
    return AuthResponse(status=status, phone=phone, loginId=login_id, url=url,
                        expiresAt=expires_at if url and isinstance(expires_at, str) else None,
                        qrSvg=qr_svg(url) if url else None, error=_qr_error(answer.get("error")))


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)

    # parse
    body = validate_model(AuthRequest, parse_json_object(await request.body()))

    # authorize: the integration must be the caller's organization's (another organization's is 404)
    caller = await authenticate(request, runtime.verifier, runtime.db)

    # load
    integration = await runtime.integrations.load(caller.organization_id, str(body.integrationId))
    if integration.provider != "telegram_crm":
        raise IntegrationNotFoundError("This integration is not a telegram_crm integration", field="integrationId")
    settings = integration.telegram_crm_settings()
    crm = runtime.crm(settings)
    project_id, phone = caller.organization_id, settings.crmPhoneNumber

    # act
    if body.step == "qr":
        # With the integration's phone: only that account may scan it.
        started = await crm.start_qr_login(project_id=project_id, phone=phone)
        return _respond(_qr_response(started, phone, str(started.get("login_id", ""))))
    if body.step == "qr-status":
        login_id = body.loginId or ""
        return _respond(_qr_response(await crm.qr_login_status(project_id=project_id, login_id=login_id), phone,
                                     login_id))
    if body.step == "send-code":
        answer = await crm.send_code(project_id=project_id, phone=phone)
    elif body.step == "sign-in":
        answer = await crm.sign_in(project_id=project_id, phone=phone, code=(body.code or "").strip())
    else:
        answer = await crm.check_password(project_id=project_id, phone=phone, password=body.password or "",
                                          login_id=body.loginId)

    # respond
    timeout = answer.get("timeout")
    return _respond(AuthResponse(status=str(answer.get("status", "")), phone=phone, loginId=body.loginId,
                                 timeout=int(timeout) if isinstance(timeout, (int, float)) else None))


def _respond(answer: AuthResponse) -> JSONResponse:
    # The code steps answer as before (no QR fields); a QR step carries only what it has.
    if answer.loginId is None:
        return JSONResponse(answer.model_dump(include={"success", "status", "phone", "timeout"}))
    return JSONResponse(answer.model_dump(exclude_none=True))
