"""The one exception hierarchy of the functions and its mapping to the contract's JSON error shape.

Each class names what went wrong and carries its HTTP status and machine code; `error_response` is the only place
they become HTTP.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from enum import StrEnum
from typing import Any

import httpx
from starlette.responses import JSONResponse

from crm_server.errors import CrmError

# Who hears of every error made while a request is handled (the host's metrics, functions/metrics.py): per request
# through a context variable, so that apps in one process (tests, `tgcrm up`) do not count each other's errors.
_error_observer: ContextVar[Callable[["FunctionError"], None] | None] = ContextVar("function_error_observer",
                                                                                   default=None)


@contextlib.contextmanager
def observing_errors(observer: Callable[["FunctionError"], None]) -> Iterator[None]:
    token = _error_observer.set(observer)
    try:
        yield
    finally:
        _error_observer.reset(token)


class FunctionError(Exception):
    """Base: an error answered as `{"success": false, "error", "code", "field"?}` with `status_code`."""

    status_code = 500
    code = "INTERNAL_ERROR"
    default_message = "Internal error"

    def __init__(self, message: str | None = None, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.field = field
        self.extra_headers = dict(headers or {})
        observer = _error_observer.get()
        if observer is not None:
            observer(self)

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


class IdempotencyKeyReusedError(ValidationFailedError):
    """A replayed Idempotency-Key whose first send went to another client."""

    code = "IDEMPOTENCY_KEY_REUSED"
    default_message = "This Idempotency-Key was already used for a message to another client"


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


class MetricsKeyError(FunctionError):
    status_code = 401
    code = "INVALID_METRICS_KEY"
    default_message = "Missing or wrong Authorization: Bearer <FUNCTIONS_METRICS_KEY>"


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


# Transport failures that happen before a request is sent: nothing can have gone out.
NOT_SENT_TRANSPORT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


# --- upstream services ----------------------------------------------------------------------------------------------

class Delivery(StrEnum):
    """What a failed send proves about the message. Only proof that nothing went out allows sending it again
    elsewhere: a failover after a timeout sent the message twice."""

    # Refused before anything was sent (a malformed request, a recipient Telegram does not know): not sent, and
    # another integration would be refused alike.
    NOT_SENT = "not_sent"
    # This integration cannot send now, and said so before sending (unreachable, our key refused, the account
    # missing, logged out or throttled): not sent; another integration may.
    NOT_SENT_HERE = "not_sent_here"
    # It may have gone out (no answer in time, a 5xx after the request was taken): never sent again elsewhere.
    UNKNOWN = "unknown"


class UpstreamError(FunctionError):
    """A provider (crm_server or Wappi) failed. `retryable`: transient (a transport error or 5xx). `delivery`: what
    the failure proves about a message being sent (only NOT_SENT_HERE allows a failover)."""

    status_code = 502
    code = "PROVIDER_ERROR"
    default_message = "The messaging provider failed"
    delivery = Delivery.UNKNOWN

    def __init__(self, message: str | None = None, *, retryable: bool = False, upstream_status: int | None = None,
                 upstream_code: str | None = None, field: str | None = None,
                 headers: dict[str, str] | None = None, delivery: Delivery | None = None) -> None:
        super().__init__(message, field=field, headers=headers)
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code
        if delivery is not None:
            self.delivery = delivery


class SendOutcomeUnknownError(UpstreamError):
    """The provider took the send and did not answer in time: the message may have gone out. The answer carries the
    request's Idempotency-Key; retrying the same request with it sends at most once."""

    status_code = 504
    code = "SEND_OUTCOME_UNKNOWN"
    default_message = ("The messaging provider did not answer in time; the message may have been sent. Retry with "
                       "the same Idempotency-Key: it is sent at most once")

    def __init__(self, message: str | None = None, *, idempotency_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, retryable=True, **kwargs)
        self.idempotency_key = idempotency_key


class EarlierSendUnknownError(FunctionError):
    """A request with this Idempotency-Key went to a provider that cannot dedupe (Wappi) and its outcome is unknown:
    it is never sent again under this key."""

    status_code = 409
    code = "EARLIER_SEND_UNKNOWN"
    default_message = ("An earlier send with this Idempotency-Key may have gone out; check the chat, and send it "
                       "again as a new message if it is missing")


class RecipientNotFoundError(UpstreamError):
    """Telegram does not know this address (crm_server or Wappi said so): the next way to address the client may
    work, so the senders try it before answering this."""

    status_code = 422
    code = "RECIPIENT_NOT_FOUND"
    default_message = "Telegram cannot find this recipient"
    delivery = Delivery.NOT_SENT


class ConnectRefusedError(UpstreamError):
    """crm_server refused (or could not take) a connect. Whatever it said, for the admin it is "the server refused":
    502 with the refusal's (fixed) message, under the refusal's own code, which this class relays as it is."""

    status_code = 502

    def __init__(self, refusal: UpstreamError) -> None:
        super().__init__(refusal.message, upstream_code=refusal.upstream_code)
        self.code = refusal.code


class CrmServerUnreachableError(UpstreamError):
    """No answer in HTTP came: no connection (refused, no route, unresolvable, connect timeout), or whatever listens
    there hung up, timed out or spoke something else. One fixed message for all of them, so that a caller cannot
    tell an open port from a closed one by the answer."""

    code = "CRM_SERVER_UNREACHABLE"
    default_message = "The CRM Telegram server could not be reached"
    delivery = Delivery.NOT_SENT_HERE


class CrmServerAddressRefusedError(UpstreamError):
    """crmApiUrl names a server the functions may not reach (crm_addresses.py): refused before anything was sent.
    Judged on what the caller gave (the scheme, the host, an address); a name that resolves to a refused address is
    answered as unreachable instead, so that which internal names exist cannot be learned from the answer."""

    status_code = 422
    code = "CRM_SERVER_ADDRESS_NOT_ALLOWED"
    default_message = "crmApiUrl names a server this host may not reach"
    delivery = Delivery.NOT_SENT_HERE

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, field="crmApiUrl")


class CrmServerRejectedError(UpstreamError):
    """crm_server answered with an error our caller cannot act on (or in a shape we cannot read); the answers they
    can act on are the subclasses below, chosen by `crm_server_error`. The message is fixed per status class: what
    answers at crmApiUrl may be a service the caller wanted to read, so its words never reach them."""

    code = "CRM_SERVER_ERROR"
    default_message = "The CRM Telegram server returned an error"


class CrmServerAuthFailedError(CrmServerRejectedError):
    """crm_server refused the integration's stored API key (its 401/403): our misconfiguration, so 502 for our
    caller, never their own 401/403."""

    code = "CRM_SERVER_AUTH_FAILED"
    default_message = "The CRM server rejected the integration's API key"


# crm_server's answers that reach the caller under crm_server's code: they describe the account or the recipient,
# which the caller can act on.

class TelegramAccountNotFoundError(CrmServerRejectedError):
    status_code = 404
    code = "ACCOUNT_NOT_FOUND"
    default_message = "The Telegram account of this integration is not on the CRM server; connect again"


class RegistrationNotFoundError(CrmServerRejectedError):
    status_code = 404
    code = "REGISTRATION_NOT_FOUND"
    default_message = "The CRM server has no webhook registered for this integration's account; connect again"


class TelegramAccountNotAuthorizedError(CrmServerRejectedError):
    status_code = 409
    code = "ACCOUNT_NOT_AUTHORIZED"
    default_message = "The Telegram account of this integration is not logged in; log in first"


class InvalidPhoneError(CrmServerRejectedError):
    status_code = 422
    code = "INVALID_PHONE"
    default_message = "Telegram rejected this phone number"


class RecipientPrivacyError(CrmServerRejectedError):
    status_code = 403
    code = "RECIPIENT_PRIVACY"
    default_message = "The recipient's privacy settings do not allow this message"
    delivery = Delivery.NOT_SENT  # the recipient's refusal, not the account's: another account is refused alike


class FloodWaitError(CrmServerRejectedError):
    status_code = 429
    code = "FLOOD_WAIT"
    default_message = "Telegram asks this account to wait before sending again"


class RateLimitedError(CrmServerRejectedError):
    status_code = 429
    code = "RATE_LIMITED"
    default_message = "This account sends too fast; wait before sending again"


class TelegramFailedError(CrmServerRejectedError):
    status_code = 502
    code = "TELEGRAM_ERROR"
    default_message = "Telegram returned an error"


class AccountDisconnectedError(CrmServerRejectedError):
    status_code = 503
    code = "ACCOUNT_DISCONNECTED"
    default_message = "The Telegram account is not connected right now; try again shortly"


class IdempotencyInProgressError(CrmServerRejectedError):
    status_code = 409
    code = "IDEMPOTENCY_IN_PROGRESS"
    default_message = "A send with this Idempotency-Key is still in progress; retry shortly"
    delivery = Delivery.UNKNOWN  # the first request may yet send it: never elsewhere meanwhile


# The login steps of the admin page: the person typing can fix these.

class InvalidLoginCodeError(CrmServerRejectedError):
    status_code = 422
    code = "INVALID_CODE"
    default_message = "The login code is wrong or expired"


class PasswordInvalidError(CrmServerRejectedError):
    status_code = 422
    code = "PASSWORD_INVALID"
    default_message = "The two-step verification password is wrong"


class LoginNotStartedError(CrmServerRejectedError):
    status_code = 409
    code = "LOGIN_NOT_STARTED"
    default_message = "No login is in progress for this account; request a new code"


class WappiError(UpstreamError):
    code = "WAPPI_ERROR"
    default_message = "Wappi.pro returned an error"


class WappiUnreachableError(WappiError):
    """No connection could be made: nothing was sent."""

    code = "WAPPI_UNREACHABLE"
    default_message = "Wappi.pro could not be reached"
    delivery = Delivery.NOT_SENT_HERE


class WappiAuthFailedError(WappiError):
    """Wappi refused the integration's API token (its 401/403): our caller's 502, as for crm_server's refusal."""

    code = "WAPPI_AUTH_FAILED"
    default_message = "Wappi.pro rejected the integration's API token"
    delivery = Delivery.NOT_SENT_HERE


class DatabaseError(FunctionError):
    """The database (through the REST API) failed: 5xx so that a webhook sender retries.

    `pg_code` is PostgreSQL's SQLSTATE when the database answered (23505: a unique key already holds the row).
    """

    status_code = 503
    code = "DATABASE_ERROR"
    default_message = "The database is unavailable; try again"

    def __init__(self, message: str | None = None, *, pg_code: str | None = None) -> None:
        self.pg_code = pg_code  # before the base's __init__, which shows the error to the metrics
        super().__init__(message)


# --- media: files of incoming messages (crm_server → Storage) and of outgoing ones (Storage → crm_server) -----------

class MediaFetchFailedError(FunctionError):
    """The file of an incoming message could not be fetched from crm_server (unreachable, an error answer, a
    redirect): 5xx, so that crm_server delivers the event again and the file is fetched then."""

    status_code = 502
    code = "MEDIA_FETCH_FAILED"
    default_message = "The message's file could not be fetched from the CRM Telegram server; deliver it again"


class MediaMismatchError(FunctionError):
    """The fetched file is not the one the event describes (its size or SHA-256 differ, or it is longer than the
    event said): nothing is stored; 5xx, since a truncated or corrupted transfer may succeed next time."""

    status_code = 502
    code = "MEDIA_MISMATCH"
    default_message = "The fetched file does not match the event's size or sha256; deliver it again"


class MediaStoreFailedError(FunctionError):
    """Storage did not take the file (or a signed URL for it): 5xx, like the database failing."""

    status_code = 503
    code = "MEDIA_STORE_FAILED"
    default_message = "The file could not be stored; try again"


class MediaTooLargeForStorageError(MediaStoreFailedError):
    """Storage refused the file as larger than its limit (413): a retry cannot succeed, so the incoming message is
    stored without it (never answered to crm_server)."""

    code = "MEDIA_TOO_LARGE_FOR_STORAGE"
    default_message = "The file is larger than Storage accepts"


class FileForbiddenError(FunctionError):
    """fileUrl names a chat-media object outside the caller's organization folder."""

    status_code = 403
    code = "FILE_FORBIDDEN"
    default_message = "fileUrl names a file of another organization"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, field="fileUrl")


class FileTooLargeForSandboxError(FunctionError):
    """The sandbox demo hands a file to the simulated user whole: it takes files up to a bound."""

    status_code = 413
    code = "FILE_TOO_LARGE"
    default_message = "The file is too large for the sandbox"


class FileNotFoundInStorageError(FunctionError):
    """fileUrl names a chat-media object of the caller's organization that Storage does not have."""

    status_code = 422
    code = "FILE_NOT_FOUND"
    default_message = "fileUrl names a file that is not in storage"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, field="fileUrl")


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


# crm_server's codes that reach the caller as they are, each as its class (RecipientNotFoundError is Wappi's answer
# too: one class, whichever provider said it).
CRM_SERVER_CODES: dict[str, type[UpstreamError]] = {error.code: error for error in (
    TelegramAccountNotFoundError, RegistrationNotFoundError, TelegramAccountNotAuthorizedError,
    RecipientNotFoundError, InvalidPhoneError,
    RecipientPrivacyError, FloodWaitError, RateLimitedError, TelegramFailedError, AccountDisconnectedError,
    IdempotencyInProgressError, InvalidLoginCodeError, PasswordInvalidError, LoginNotStartedError,
)}


def _codes_of(error: type[CrmError]) -> set[str]:
    return {error.code}.union(*(_codes_of(subclass) for subclass in error.__subclasses__()))


# Every code crm_server answers with (its own exception hierarchy says which): the only codes an answer from crmApiUrl
# may carry to our caller. Anything else came from a server that is not crm_server, and is dropped with its words.
CRM_SERVER_KNOWN_CODES: frozenset[str] = frozenset(_codes_of(CrmError) | CRM_SERVER_CODES.keys())

# What the caller reads for an answer crm_server's codes do not explain: one fixed message per status class.
STATUS_CLASS_MESSAGES = {
    3: "The CRM Telegram server answered with a redirect, which is not followed; check crmApiUrl",
    4: "The CRM Telegram server refused the request",
    5: "The CRM Telegram server failed to handle the request",
}


def _delivery_of(status: int) -> Delivery:
    """What crm_server's status proves about a send: it answers these before it sends (our key, the account, its
    login, its pacing); any other 4xx is a refusal of the message itself; a 5xx may come after Telegram took it."""
    if status in (401, 403, 404, 409, 429):
        return Delivery.NOT_SENT_HERE
    if 400 <= status < 500:
        return Delivery.NOT_SENT
    return Delivery.UNKNOWN


def crm_server_error(status: int, code: str | None, retry_after: str | None = None) -> UpstreamError:
    """The answer our caller gets for an error response of crm_server: by its code when CRM_SERVER_CODES has it,
    else by its status (401/403: our key; 429: slow down; anything else: 502). Only the status, a code of
    crm_server's (CRM_SERVER_KNOWN_CODES) and Retry-After are read: never the answer's words."""
    known_code = code if code in CRM_SERVER_KNOWN_CODES else None
    answer: dict[str, Any] = {"retryable": status >= 500 or status == 408, "upstream_status": status,
                              "upstream_code": known_code, "delivery": _delivery_of(status)}
    relayed = {"Retry-After": retry_after} if retry_after else {}
    by_code = CRM_SERVER_CODES.get(known_code) if known_code else None
    if by_code is not None and "delivery" in vars(by_code):
        answer["delivery"] = by_code.delivery  # the code knows better than the status
    # 401/403 mean crm_server refused our stored API key, whatever the code; except the recipient's privacy
    # refusal, which crm_server answers as 403 too.
    if status in (401, 403) and by_code is not RecipientPrivacyError:
        return CrmServerAuthFailedError(**answer)
    if by_code is not None:
        text = by_code.default_message
        if status == 429 and retry_after:
            text = f"{text} ({retry_after} s)"
        return by_code(text, headers=relayed, **answer)
    if status == 429:
        return RateLimitedError(headers=relayed, **answer)
    return CrmServerRejectedError(STATUS_CLASS_MESSAGES.get(status // 100), **answer)


def error_body(error: FunctionError) -> dict[str, object]:
    body: dict[str, object] = {"success": False, "error": error.message, "code": error.code}
    if error.field is not None:
        body["field"] = error.field
    if isinstance(error, SendOutcomeUnknownError) and error.idempotency_key is not None:
        body["idempotencyKey"] = error.idempotency_key  # what the caller retries with
    if isinstance(error, UpstreamError) and error.upstream_code and error.upstream_code != error.code:
        body["upstreamCode"] = error.upstream_code  # crm_server's own code (never anyone else's: crm_server_error)
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
