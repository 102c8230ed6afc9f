"""The one exception hierarchy of the functions and its mapping to the contract's JSON error shape.

Each class names what went wrong and carries its HTTP status and machine code; `error_response` is the only place
they become HTTP.
"""

from __future__ import annotations

import math

from starlette.responses import JSONResponse


class FunctionError(Exception):
    """Base: an error answered as `{"success": false, "error", "code", "field"?}` with `status_code`."""

    status_code = 500
    code = "INTERNAL_ERROR"
    default_message = "Internal error"

    def __init__(self, message: str | None = None, *, field: str | None = None, code: str | None = None,
                 status_code: int | None = None, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.field = field
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.extra_headers = dict(headers or {})

    def headers(self) -> dict[str, str]:
        return self.extra_headers


# --- the request itself ---------------------------------------------------------------------------------------------

class MalformedBodyError(FunctionError):
    """The body is not JSON, or not a JSON object."""

    status_code = 400
    code = "INVALID_JSON"
    default_message = "The request body must be a JSON object"


class ValidationFailedError(FunctionError):
    """A required field is missing or a field is malformed; `field` names it."""

    status_code = 422
    code = "VALIDATION_ERROR"
    default_message = "Invalid request"


class PayloadTooLargeError(FunctionError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "The request body is too large"


class FunctionNotFoundError(FunctionError):
    status_code = 404
    code = "FUNCTION_NOT_FOUND"
    default_message = "No such function"


class MethodNotAllowedError(FunctionError):
    status_code = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "Method not allowed"


# --- who is calling -------------------------------------------------------------------------------------------------

class MissingTokenError(FunctionError):
    status_code = 401
    code = "UNAUTHORIZED"
    default_message = "Missing Authorization: Bearer <token>"


class InvalidTokenError(FunctionError):
    status_code = 401
    code = "INVALID_TOKEN"
    default_message = "The access token is invalid or expired"


class OrganizationNotFoundError(FunctionError):
    status_code = 404
    code = "ORGANIZATION_NOT_FOUND"
    default_message = "The user does not belong to an organization"


class WebhookSecretError(FunctionError):
    status_code = 401
    code = "INVALID_SECRET"
    default_message = "Missing or wrong X-Lovable-Secret"


class WebhookSignatureError(FunctionError):
    status_code = 401
    code = "INVALID_SIGNATURE"
    default_message = "Missing, invalid or expired webhook signature"


class ProjectMismatchError(FunctionError):
    status_code = 403
    code = "PROJECT_MISMATCH"
    default_message = "project_id is not this integration's organization"


# --- what the caller asked for --------------------------------------------------------------------------------------

class IntegrationNotFoundError(FunctionError):
    status_code = 404
    code = "INTEGRATION_NOT_FOUND"
    default_message = "No such integration"


class IntegrationDisabledError(FunctionError):
    status_code = 409
    code = "INTEGRATION_DISABLED"
    default_message = "This integration is disabled"


class IntegrationMisconfiguredError(FunctionError):
    status_code = 409
    code = "INTEGRATION_MISCONFIGURED"
    default_message = "This integration's settings are incomplete; connect it again"


class ClientNotFoundError(FunctionError):
    status_code = 404
    code = "CLIENT_NOT_FOUND"
    default_message = "No such client"


class RecipientUnknownError(FunctionError):
    status_code = 422
    code = "CLIENT_HAS_NO_TELEGRAM"
    default_message = "The client has no Telegram chat id, user id, username or phone to write to"


# --- upstream services ----------------------------------------------------------------------------------------------

class UpstreamError(FunctionError):
    """A provider (crm_server or Wappi) failed. `retryable`: a transport error or 5xx, worth a failover."""

    status_code = 502
    code = "PROVIDER_ERROR"
    default_message = "The messaging provider failed"

    def __init__(self, message: str | None = None, *, retryable: bool = False, upstream_status: int | None = None,
                 upstream_code: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code


class CrmServerUnreachableError(UpstreamError):
    code = "CRM_SERVER_UNREACHABLE"
    default_message = "The CRM Telegram server could not be reached"


class CrmServerRejectedError(UpstreamError):
    """crm_server answered with an error; `status_code`/`code` are chosen by `crm_server_error`."""

    code = "CRM_SERVER_ERROR"
    default_message = "The CRM Telegram server returned an error"


class WappiError(UpstreamError):
    code = "WAPPI_ERROR"
    default_message = "Wappi.pro returned an error"


class DatabaseError(FunctionError):
    """The database (through the REST API) failed: 5xx so that a webhook sender retries.

    `pg_code` is PostgreSQL's SQLSTATE when the database answered (23505: a unique key already holds the row).
    """

    status_code = 503
    code = "DATABASE_ERROR"
    default_message = "The database is unavailable; try again"

    def __init__(self, message: str | None = None, *, pg_code: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.pg_code = pg_code


class SettingsKeyError(FunctionError):
    """An integration's secrets were sealed under another FUNCTIONS_SETTINGS_KEY (or none is configured): a
    server misconfiguration the caller cannot fix, so 500. The message never carries the key or the secret."""

    status_code = 500
    code = "SETTINGS_KEY_MISMATCH"
    default_message = ("The integration's secrets were sealed with another settings key; the server's "
                       "FUNCTIONS_SETTINGS_KEY must be the one they were saved with")


class MessageNotStoredError(FunctionError):
    status_code = 500
    code = "MESSAGE_NOT_STORED"
    default_message = ("The message was sent but could not be saved; retry with the same Idempotency-Key "
                       "to save it without sending twice")


# crm_server's codes that reach the caller as they are (they describe the account or the recipient, which the
# caller can act on); 401/403 on the server's side mean our stored API key is wrong: that is a 502 for our caller.
_PASSED_THROUGH = {
    "ACCOUNT_NOT_FOUND": (404, "The Telegram account of this integration is not on the CRM server; connect again"),
    "ACCOUNT_NOT_AUTHORIZED": (409, "The Telegram account of this integration is not logged in; log in first"),
    "RECIPIENT_NOT_FOUND": (422, "Telegram cannot find this recipient"),
    "INVALID_PHONE": (422, "Telegram rejected this phone number"),
    "RECIPIENT_PRIVACY": (403, "The recipient's privacy settings do not allow this message"),
    "FLOOD_WAIT": (429, "Telegram asks this account to wait before sending again"),
    "RATE_LIMITED": (429, "This account sends too fast; wait before sending again"),
    "TELEGRAM_ERROR": (502, "Telegram returned an error"),
    "ACCOUNT_DISCONNECTED": (503, "The Telegram account is not connected right now; try again shortly"),
    "IDEMPOTENCY_IN_PROGRESS": (409, "A send with this Idempotency-Key is still in progress; retry shortly"),
    # The login steps of the admin page: the person typing can fix these.
    "INVALID_CODE": (422, "The login code is wrong or expired"),
    "PASSWORD_INVALID": (422, "The two-step verification password is wrong"),
    "LOGIN_NOT_STARTED": (409, "No login is in progress for this account; request a new code"),
}


def crm_server_error(status: int, code: str | None, message: str | None,
                     retry_after: str | None = None) -> CrmServerRejectedError:
    """The answer our caller gets for an error response of crm_server."""
    retryable = status >= 500 or status == 408
    server_message = message or f"HTTP {status}"
    headers = {"Retry-After": retry_after} if retry_after else {}
    if status in (401, 403) and code != "RECIPIENT_PRIVACY":
        return CrmServerRejectedError(f"The CRM server rejected the integration's API key: {server_message}",
                                      code="CRM_SERVER_AUTH_FAILED", status_code=502, retryable=False,
                                      upstream_status=status, upstream_code=code)
    if code in _PASSED_THROUGH:
        mapped_status, text = _PASSED_THROUGH[code]
        if status == 429 and retry_after:
            text = f"{text} ({retry_after} s)"
        return CrmServerRejectedError(f"{text}: {server_message}", code=code, status_code=mapped_status,
                                      headers=headers, retryable=retryable, upstream_status=status,
                                      upstream_code=code)
    if status == 429:
        return CrmServerRejectedError(f"The CRM server asks to slow down: {server_message}",
                                      code=code or "RATE_LIMITED", status_code=429, headers=headers, retryable=False,
                                      upstream_status=status, upstream_code=code)
    return CrmServerRejectedError(f"The CRM server answered {status}: {server_message}", status_code=502,
                                  retryable=retryable, upstream_status=status, upstream_code=code)


def error_body(error: FunctionError) -> dict[str, object]:
    body: dict[str, object] = {"success": False, "error": error.message, "code": error.code}
    if error.field is not None:
        body["field"] = error.field
    return body


def error_response(error: FunctionError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.status_code,
                        headers={**error.headers(), **(headers or {})})


def retry_after_seconds(value: str | None) -> str | None:
    """A Retry-After header normalised to whole seconds, or None when absent or unreadable."""
    if not value:
        return None
    try:
        return str(max(1, math.ceil(float(value))))
    except ValueError:
        return None
