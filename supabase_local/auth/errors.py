"""Every error the auth service answers, one class per GoTrue error code, framed as GoTrue frames it.

A client that sends `X-Supabase-Api-Version: 2024-01-01` (supabase-py, supabase-js) gets `{code, message}` with the
header echoed; any other gets the original `{code: <status>, error_code, msg}`, as GoTrue's HandleResponseError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from starlette.responses import JSONResponse

API_VERSION_HEADER = "X-Supabase-Api-Version"
API_VERSION_2024_01_01 = "2024-01-01"
_DATE = re.compile(r"^2[0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


class AuthError(Exception):
    status: ClassVar[int] = 400
    error_code: ClassVar[str] = "unexpected_failure"
    default_message: ClassVar[str] = "Unexpected failure"

    def __init__(self, message: str | None = None, extra: Mapping[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.extra = dict(extra or {})
        super().__init__(self.message)

    def response(self, request_headers: Mapping[str, str]) -> JSONResponse:
        version = request_headers.get(API_VERSION_HEADER.lower(), "")
        if _DATE.match(version) and version >= API_VERSION_2024_01_01:
            return JSONResponse({"code": self.error_code, "message": self.message, **self.extra},
                                status_code=self.status, headers={API_VERSION_HEADER: API_VERSION_2024_01_01})
        return JSONResponse({"code": self.status, "error_code": self.error_code, "msg": self.message, **self.extra},
                            status_code=self.status)


class ValidationFailed(AuthError):
    error_code = "validation_failed"
    default_message = "Invalid request"


class BadJson(AuthError):
    error_code = "bad_json"
    default_message = "Could not parse request body as JSON"


class RequestTooLarge(AuthError):
    status = 413
    error_code = "request_too_large"
    default_message = "Request body too large"


class UnsupportedGrantType(AuthError):
    error_code = "unsupported_grant_type"
    default_message = "grant_type: must be one of password, refresh_token"


class InvalidCredentials(AuthError):
    error_code = "invalid_credentials"
    default_message = "Invalid login credentials"


class EmailNotConfirmed(AuthError):
    error_code = "email_not_confirmed"
    default_message = "Email not confirmed"


class PhoneProviderDisabled(AuthError):
    error_code = "phone_provider_disabled"
    default_message = "Phone logins are disabled"


class RefreshTokenNotFound(AuthError):
    error_code = "refresh_token_not_found"
    default_message = "Invalid Refresh Token: Refresh Token Not Found"


class RefreshTokenAlreadyUsed(AuthError):
    error_code = "refresh_token_already_used"
    default_message = "Invalid Refresh Token: Already Used"


class NoAuthorization(AuthError):
    status = 401
    error_code = "no_authorization"
    default_message = "This endpoint requires a valid Bearer token"


class BadJwt(AuthError):
    status = 403
    error_code = "bad_jwt"
    default_message = "invalid JWT: unable to parse or verify signature"


class NotAdmin(AuthError):
    status = 403
    error_code = "not_admin"
    default_message = "User not allowed"


class SessionNotFound(AuthError):
    status = 403
    error_code = "session_not_found"
    default_message = "Session from session_id claim in JWT does not exist"


class TokenUserNotFound(AuthError):
    status = 403
    error_code = "user_not_found"
    default_message = "User from sub claim in JWT does not exist"


class UserNotFound(AuthError):
    status = 404
    error_code = "user_not_found"
    default_message = "User not found"


class EmailExists(AuthError):
    status = 422
    error_code = "email_exists"
    default_message = "A user with this email address has already been registered"


class UserAlreadyExists(AuthError):
    status = 422
    error_code = "user_already_exists"
    default_message = "User already registered"


class SignupDisabled(AuthError):
    status = 422
    error_code = "signup_disabled"
    default_message = "Signups not allowed for this instance"


class WeakPassword(AuthError):
    status = 422
    error_code = "weak_password"

    def __init__(self, minimum: int) -> None:
        # `weak_password.reasons` is what supabase-py turns into AuthWeakPasswordError.reasons.
        super().__init__(f"Password should be at least {minimum} characters.",
                         extra={"weak_password": {"reasons": ["length"]}})


class MethodNotAllowed(AuthError):
    status = 405
    error_code = "method_not_allowed"
    default_message = "Method not allowed"


class NotFound(AuthError):
    status = 404
    error_code = "not_found"
    default_message = "Not found"
