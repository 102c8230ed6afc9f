"""The one exception hierarchy of crm_server and its mapping to the contract's JSON error shape.

Each class names what went wrong and carries its HTTP status and machine code; `error_response` is the only place they become HTTP.
"""

from __future__ import annotations

import math

from starlette.responses import JSONResponse


class CrmError(Exception):
    """Base: an error the API reports to its caller as `{"success": false, "error", "code", "field"?}`."""

    status_code = 500
    code = "INTERNAL_ERROR"
    default_message = "Internal server error"

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.field = field

    def headers(self) -> dict[str, str]:
        return {}


class RetryableError(CrmError):
    """An error the caller may retry after `retry_after` seconds (sent as the Retry-After header)."""

    def __init__(self, message: str | None = None, *, retry_after: float, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = max(1, math.ceil(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ValidationError(CrmError):
    status_code = 422
    code = "VALIDATION_ERROR"
    default_message = "Invalid request"


class MalformedBodyError(ValidationError):
    """The body is not JSON, or not a JSON object."""

    status_code = 400


class PayloadTooLargeError(CrmError):
    """The body is larger than a route reads (refused on its declared length, before reading it)."""

    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "The request body is too large"


class UnauthorizedError(CrmError):
    status_code = 401
    code = "UNAUTHORIZED"
    default_message = "Missing or unknown X-API-Key"


class ProjectForbiddenError(CrmError):
    status_code = 403
    code = "PROJECT_FORBIDDEN"
    default_message = "This API key is not allowed for this project"


class RouteNotFoundError(CrmError):
    status_code = 404
    code = "NOT_FOUND"
    default_message = "No such route"


class MethodNotAllowedError(CrmError):
    status_code = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "Method not allowed"


class AccountNotFoundError(CrmError):
    status_code = 404
    code = "ACCOUNT_NOT_FOUND"
    default_message = "No such Telegram account for this project"


class RegistrationNotFoundError(CrmError):
    status_code = 404
    code = "REGISTRATION_NOT_FOUND"
    default_message = "This account has no webhook registration; connect it first"


class DeliveryNotFoundError(CrmError):
    status_code = 404
    code = "DELIVERY_NOT_FOUND"
    default_message = "No such failed delivery for this project"


class AccountNotAuthorizedError(CrmError):
    status_code = 409
    code = "ACCOUNT_NOT_AUTHORIZED"
    default_message = "The Telegram account is not logged in"


class AccountHeldByAnotherProjectError(CrmError):
    status_code = 409
    code = "ACCOUNT_HELD_BY_ANOTHER_PROJECT"
    default_message = "This phone is another project's Telegram account on this server"


class LoginNotStartedError(CrmError):
    status_code = 409
    code = "LOGIN_NOT_STARTED"
    default_message = "No login in progress for this phone; call /telegram/auth/send-code first"


class LoginNotFoundError(CrmError):
    status_code = 404
    code = "LOGIN_NOT_FOUND"
    default_message = "No such QR login for this project (it ended, or was never started); start a new one"


class LoginTokenRefusedError(CrmError):
    """The sandbox's simulated phone could not accept a QR code: Telegram's reason is the code
    (AUTH_TOKEN_EXPIRED, AUTH_TOKEN_INVALID, AUTH_TOKEN_ALREADY_ACCEPTED)."""

    status_code = 422
    code = "AUTH_TOKEN_INVALID"
    default_message = "The QR code holds no valid login token"

    def __init__(self, code: str, message: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.code = code


class IdempotencyInProgressError(RetryableError):
    status_code = 409
    code = "IDEMPOTENCY_IN_PROGRESS"
    default_message = "A request with this Idempotency-Key is still being processed"


class RecipientNotFoundError(CrmError):
    status_code = 422
    code = "RECIPIENT_NOT_FOUND"
    default_message = "Recipient not found"


class InvalidPhoneError(CrmError):
    status_code = 422
    code = "INVALID_PHONE"
    default_message = "Telegram rejected this phone number"


class InvalidCodeError(CrmError):
    status_code = 422
    code = "INVALID_CODE"
    default_message = "The login code is wrong"


class PasswordInvalidError(CrmError):
    status_code = 422
    code = "PASSWORD_INVALID"
    default_message = "The 2FA password is wrong"


class RecipientPrivacyError(CrmError):
    status_code = 403
    code = "RECIPIENT_PRIVACY"
    default_message = "The recipient's privacy settings do not allow this message"


class FloodWaitError(RetryableError):
    status_code = 429
    code = "FLOOD_WAIT"
    default_message = "Telegram asks this account to wait before sending again"


class RateLimitedError(RetryableError):
    status_code = 429
    code = "RATE_LIMITED"
    default_message = "This account sends too fast; wait before sending again"


class TelegramError(CrmError):
    status_code = 502
    code = "TELEGRAM_ERROR"
    default_message = "Telegram returned an error"


class AccountDisconnectedError(CrmError):
    status_code = 503
    code = "ACCOUNT_DISCONNECTED"
    default_message = "The Telegram account is not connected right now"


class HolderUnreachableError(AccountDisconnectedError, RetryableError):
    """Another instance holds the account's lease but does not answer: it counts as gone only once the lease
    expires, so the caller is told when to try again."""

    default_message = "The crm_server instance running this account does not answer; retry after its lease expires"


class ClusterSignatureInvalidError(CrmError):
    """A request claiming to be forwarded by another instance whose cluster signature is missing, wrong or old."""

    status_code = 401
    code = "CLUSTER_SIGNATURE_INVALID"
    default_message = "Invalid or expired cluster signature"


class MediaLinkInvalidError(CrmError):
    """A media link whose signature is not ours, or that expired (the two are not told apart)."""

    status_code = 403
    code = "MEDIA_LINK_INVALID"
    default_message = "This media link is invalid or has expired"


class MediaNotFoundError(CrmError):
    status_code = 404
    code = "MEDIA_NOT_FOUND"
    default_message = "This file is no longer kept"


class FileTooLargeError(CrmError):
    """An outgoing `file_url` is larger than CRM_MEDIA_MAX_BYTES."""

    status_code = 413
    code = "FILE_TOO_LARGE"
    default_message = "The file is larger than this server sends"


class FileUnavailableError(CrmError):
    """An outgoing `file_url` could not be fetched (refused address, error answer, network failure)."""

    status_code = 422
    code = "FILE_UNAVAILABLE"
    default_message = "The file could not be fetched"


def error_body(error: CrmError) -> dict[str, object]:
    body: dict[str, object] = {"success": False, "error": error.message, "code": error.code}
    if error.field is not None:
        body["field"] = error.field
    return body


def error_response(error: CrmError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.status_code, headers=error.headers())


class HistoryJobNotFoundError(CrmError):
    status_code = 404
    code = "HISTORY_JOB_NOT_FOUND"
    default_message = "No such history import job for this API key"
