"""telegram-crm-auth: log the Telegram account of a telegram_crm integration in, one step per call (the admin page).

The browser sends the integration id and what the person typed; the integration's crm_server key never leaves here.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import IntegrationNotFoundError
from functions._shared.runtime import runtime_of
from functions._shared.parsing import RequestModel, parse_json_object, validate_model

Step = Literal["send-code", "sign-in", "password"]


class AuthRequest(RequestModel):
    """Which integration, which step, and the code or 2FA password the step needs."""

    integrationId: UUID
    step: Step
    code: str | None = Field(None, max_length=32)
    password: str | None = Field(None, max_length=256)

    @model_validator(mode="after")
    def _step_input(self) -> AuthRequest:
        if self.step == "sign-in" and not (self.code or "").strip():
            raise ValueError("code is required for the sign-in step")
        if self.step == "password" and not self.password:
            raise ValueError("password is required for the password step")
        return self


class AuthResponse(BaseModel):
    success: bool = True
    # code_sent | authorized | password_required
    status: str
    phone: str
    timeout: int | None = None


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
    if body.step == "send-code":
        answer = await crm.send_code(project_id=project_id, phone=phone)
    elif body.step == "sign-in":
        answer = await crm.sign_in(project_id=project_id, phone=phone, code=(body.code or "").strip())
    else:
        answer = await crm.check_password(project_id=project_id, phone=phone, password=body.password or "")

    # respond
    timeout = answer.get("timeout")
    return JSONResponse(AuthResponse(status=str(answer.get("status", "")), phone=phone,
                                     timeout=int(timeout) if isinstance(timeout, (int, float)) else None).model_dump())
