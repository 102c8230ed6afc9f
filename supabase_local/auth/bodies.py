"""The request bodies the auth service reads, validated once at the edge (unknown keys are ignored: clients send
more than this subset uses, such as `gotrue_meta_security` or a PKCE challenge)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from starlette.requests import Request

from supabase_local.auth.errors import BadJson, RequestTooLarge, ValidationFailed

MAX_BODY_BYTES = 64 * 1024
# The shape GoTrue accepts; deliverability is not checked (nothing is mailed locally).
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
Body = TypeVar("Body", bound=BaseModel)


def _email(value: str | None) -> str | None:
    if value is None:
        return None
    email = value.strip().lower()
    if not EMAIL.match(email) or len(email) > 255:
        raise ValueError("Unable to validate email address: invalid format")
    return email


Email = Annotated[str | None, AfterValidator(_email)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PasswordGrant(_Body):
    email: Email = None
    phone: str | None = None
    password: str


class RefreshGrant(_Body):
    refresh_token: str


class SignUp(_Body):
    email: Email = None
    phone: str | None = None
    password: str
    data: dict[str, Any] | None = None


class UserUpdate(_Body):
    email: Email = None
    password: str | None = None
    data: dict[str, Any] | None = None


class AdminUserAttributes(_Body):
    email: Email = None
    password: str | None = None
    email_confirm: bool | None = None
    user_metadata: dict[str, Any] | None = None
    app_metadata: dict[str, Any] | None = None


class AdminUserDelete(_Body):
    should_soft_delete: bool = False


async def read_body(request: Request, model: type[Body], empty_ok: bool = False) -> Body:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise RequestTooLarge(f"Request body larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip() and empty_ok:
        payload: Any = {}
    else:
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise BadJson() from None
    if not isinstance(payload, dict):
        raise BadJson("Could not parse request body as JSON: expected an object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ValidationFailed(f"{field}: {message}") from None
