"""telegram-crm-sandbox: on the local stack's sandbox only, a simulated Telegram user writes to an account.

The admin page's demo panel; the sandbox admin key comes from the host's settings and is sent only to the sandbox
server. Without CRM_SANDBOX_URL and CRM_SANDBOX_API_KEY (production) the function answers 404.
"""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import FunctionNotFoundError, IntegrationNotFoundError
from functions._shared.phones import normalize_phone
from functions._shared.runtime import runtime_of
from functions._shared.parsing import MAX_TEXT_LENGTH, RequestModel, parse_json_object, validate_model


class SandboxIncomingRequest(RequestModel):
    """Who writes (a phone; the simulated user is made or updated first), to which integration's account, what."""

    integrationId: UUID
    fromPhone: str = Field(min_length=1, max_length=40)
    fromName: str | None = Field(None, max_length=200)
    fromUsername: str | None = Field(None, max_length=64)
    text: str = Field(min_length=1, max_length=MAX_TEXT_LENGTH)

    @field_validator("fromPhone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("fromUsername")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        return (value or "").strip().lstrip("@") or None

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class SandboxIncomingResponse(BaseModel):
    success: bool = True
    messageId: int | str | None
    accountPhone: str
    fromPhone: str


async def handler(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    sandbox_url, sandbox_key = runtime.settings.crm_sandbox_url, runtime.settings.crm_sandbox_api_key
    if not sandbox_url or not sandbox_key:
        raise FunctionNotFoundError("The Telegram sandbox is available on the local stack only")

    # parse
    body = validate_model(SandboxIncomingRequest, parse_json_object(await request.body()))

    # authorize: the account must belong to the caller's organization
    caller = await authenticate(request, runtime.verifier, runtime.db)

    # load: a telegram_crm integration on the sandbox server (the admin key goes nowhere else)
    integration = await runtime.integrations.load(caller.organization_id, str(body.integrationId))
    if integration.provider != "telegram_crm":
        raise IntegrationNotFoundError("This integration is not a telegram_crm integration", field="integrationId")
    settings = integration.telegram_crm_settings()
    if settings.crmApiUrl.rstrip("/") != sandbox_url.rstrip("/"):
        raise IntegrationNotFoundError("This integration's account is not on the local sandbox server",
                                       field="integrationId")

    # act: make (or update) the simulated user, then let them write
    sandbox = runtime.crm_at(sandbox_url, sandbox_key)
    await sandbox.sandbox_user(phone=body.fromPhone, first_name=body.fromName, username=body.fromUsername)
    answer = await sandbox.sandbox_incoming(account_phone=settings.crmPhoneNumber, sender=body.fromPhone,
                                            text=body.text)

    # respond
    return JSONResponse(SandboxIncomingResponse(messageId=answer.get("message_id"),
                                                accountPhone=settings.crmPhoneNumber,
                                                fromPhone=body.fromPhone).model_dump())
