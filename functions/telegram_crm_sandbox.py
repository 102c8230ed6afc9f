"""telegram-crm-sandbox: on the local stack's sandbox only, a simulated Telegram user writes to an account.

The admin page's demo panel; the sandbox admin key comes from the host's settings and is sent only to the sandbox
server. Without CRM_SANDBOX_URL and CRM_SANDBOX_API_KEY (production) the function answers 404.
"""

from __future__ import annotations

import base64
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.auth import authenticate
from functions._shared.errors import FunctionNotFoundError, IntegrationNotFoundError, ValidationFailedError
from functions._shared.outgoing_files import authorize_file, chat_media_file
from functions._shared.phones import normalize_phone
from functions._shared.runtime import runtime_of
from functions._shared.parsing import MAX_TEXT_LENGTH, RequestModel, parse_json_object, validate_model


# What the simulated user may send (Telegram's media kinds, as the sandbox builds them).
SandboxFileKind = Literal["photo", "voice", "audio", "video", "video_note", "document", "sticker", "animation"]
# The file travels whole, as base64 inside one request to the sandbox (which takes up to 64 MiB of file).
SANDBOX_FILE_MAX_BYTES = 20 * 1024 * 1024
MAX_CAPTION_LENGTH = 1024


class SandboxIncomingRequest(RequestModel):
    """Who writes (a phone; the simulated user is made or updated first), to which integration's account, what:
    a text, or a file of the organization's chat-media folder (the admin page uploads it first) with a caption."""

    integrationId: UUID
    fromPhone: str = Field(min_length=1, max_length=40)
    fromName: str | None = Field(None, max_length=200)
    fromUsername: str | None = Field(None, max_length=64)
    text: str = Field("", max_length=MAX_TEXT_LENGTH)
    fileUrl: str | None = Field(None, min_length=1, max_length=2000)
    fileName: str | None = Field(None, max_length=255)
    fileType: SandboxFileKind = "document"

    @field_validator("fromPhone")
    @classmethod
    def _phone(cls, value: str) -> str:
        return normalize_phone(value)

    @field_validator("fromUsername")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        return (value or "").strip().lstrip("@") or None

    @model_validator(mode="after")
    def _has_content(self) -> SandboxIncomingRequest:
        if self.fileUrl is None and not self.text.strip():
            raise ValueError("text or fileUrl is required")
        if self.fileUrl is not None and len(self.text) > MAX_CAPTION_LENGTH:
            raise ValueError(f"text (a caption) has at most {MAX_CAPTION_LENGTH} characters")
        return self


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

    # load: the file, only from the caller's own organization folder (the service role could read any)
    media = None
    if body.fileUrl is not None:
        file = chat_media_file(runtime.media, body.fileUrl)
        if file is None:
            raise ValidationFailedError("fileUrl: the sandbox takes a chat-media file of your organization",
                                        field="fileUrl")
        authorize_file(file, caller.organization_id)
        data = await runtime.media.read(file.path, SANDBOX_FILE_MAX_BYTES)
        media = {"kind": body.fileType, "data_base64": base64.b64encode(data).decode(),
                 "file_name": body.fileName or file.path.rsplit("/", 1)[-1]}

    # act: make (or update) the simulated user, then let them write
    sandbox = runtime.crm_at(sandbox_url, sandbox_key)
    await sandbox.sandbox_user(phone=body.fromPhone, first_name=body.fromName, username=body.fromUsername)
    answer = await sandbox.sandbox_incoming(account_phone=settings.crmPhoneNumber, sender=body.fromPhone,
                                            text=body.text, media=media)

    # respond
    return JSONResponse(SandboxIncomingResponse(messageId=answer.get("message_id"),
                                                accountPhone=settings.crmPhoneNumber,
                                                fromPhone=body.fromPhone).model_dump())
