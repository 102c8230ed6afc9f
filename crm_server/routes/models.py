"""The bodies of crm_server's HTTP API as pydantic models, field names exactly as in the contract (snake_case).

Requests are validated strictly at the edge (a number is not a string); unknown fields are ignored.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from crm_server.routes.parsing import validate
from crm_server.store.webhooks import UNCHANGED, BatchSettings, Unchanged
from crm_server.telegram.recipients import normalize_phone, parse_recipient
from crm_server.telegram.states import AccountState, LoginOutcome
from crm_server.webhooks.events import EVENT_TYPES


def _recipient(value: str | int) -> str | int:
    parse_recipient(value)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


FILE_KINDS = ("photo", "document", "voice", "video", "audio")


def _file_kind(value: str) -> str:
    """A kind of the contract, or a MIME type as callers of the original plan sent it (mapped to its kind)."""
    value = value.strip().lower()
    if value in FILE_KINDS:
        return value
    if re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", value):
        major = value.split("/", 1)[0]
        return {"image": "photo", "video": "video", "audio": "audio"}.get(major, "document")
    raise ValueError(f"must be one of {', '.join(FILE_KINDS)}")


def _http_url(value: str) -> str:
    if not re.match(r"(?i)^https?://[^/?#\s]+", value) or any(ch.isspace() for ch in value):
        raise ValueError("must be an http:// or https:// URL")
    return value


ProjectId = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$")]
Phone = Annotated[StrictStr, Field(min_length=5, max_length=32, examples=["+15551234567"]), AfterValidator(normalize_phone)]
Text = Annotated[StrictStr, Field(min_length=1, max_length=4096), AfterValidator(_not_blank)]
# A message's text, or a file's caption: may be empty when a file is sent (the route checks one of them is there).
Caption = Annotated[StrictStr, Field(max_length=4096)]
HttpUrl = Annotated[StrictStr, Field(min_length=8, max_length=2048), AfterValidator(_http_url)]
RecipientField = Annotated[
    StrictStr | StrictInt,
    Field(description="@username, numeric user/chat id, or phone +…", examples=["@alice", "+15551234567", 123456]),
    AfterValidator(_recipient),
]


EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


class RequestModel(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- contract routes ---------------------------------------------------------------------------


class ConnectRequest(RequestModel):
    project_id: ProjectId
    webhook_url: HttpUrl
    phone: Phone
    secret: Annotated[StrictStr, Field(min_length=8, max_length=512)] | None = None
    # False for a receiver that verifies the Standard Webhooks signature: the secret itself is then never sent.
    secret_header: StrictBool = Field(True, description="Send the secret as X-Lovable-Secret with each delivery")
    events: Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))] | None = Field(
        None, description="Event types the webhook receives (default `[\"message\"]`; absent on a re-connect: "
        "unchanged)")

    # Read as a plain object here and validated by `batch_settings` so an error names the nested field
    # (`batch.max_events`), and so an explicit null (off) is told from an absent field (unchanged).
    batch: dict[str, Any] | None = Field(
        None, description="Several events per POST: `{max_events: 1..500, max_wait_ms: 0..1000}`; null: one event "
        "per POST; absent on a re-connect: unchanged (a new registration: one event per POST)",
        json_schema_extra={"example": {"max_events": 100, "max_wait_ms": 200}})

    def event_types(self) -> tuple[str, ...] | None:
        return tuple(dict.fromkeys(self.events)) if self.events is not None else None

    def batch_settings(self) -> BatchSettings | None | Unchanged:
        """ValidationError naming `batch.<field>` when out of range."""
        if "batch" not in self.model_fields_set:
            return UNCHANGED
        if self.batch is None:
            return None
        batch = validate(BatchRequest, self.batch, prefix="batch.")
        return BatchSettings(max_events=batch.max_events, max_wait_ms=batch.max_wait_ms)


class BatchRequest(RequestModel):
    max_events: StrictInt = Field(ge=1, le=500, description="At most this many events per POST")
    max_wait_ms: StrictInt = Field(ge=0, le=1000, description="A batch goes out at the latest this long after its "
                                   "first event")


class BatchInfo(ResponseModel):
    max_events: int
    max_wait_ms: int

    @classmethod
    def of(cls, batch: BatchSettings | None) -> BatchInfo | None:
        return None if batch is None else cls(max_events=batch.max_events, max_wait_ms=batch.max_wait_ms)


class AccountSummary(ResponseModel):
    authorized: bool
    user_id: int | None
    username: str | None


class ConnectResponse(ResponseModel):
    status: Literal["connected", "auth_required"]
    project_id: str
    phone: str
    webhook_url: str
    account: AccountSummary
    secret: str | None = Field(None, description="Only when the server generated it: shown once, keep it")
    batch: BatchInfo | None = Field(None, description="Batched delivery (null: one event per POST)")
    # Every delivery carries a Standard Webhooks signature: a receiver may refuse unsigned ones (a server of the
    # original plan says nothing here, and its receiver keeps accepting the secret header alone).
    signing: Literal["standard-webhooks"] = "standard-webhooks"


class PauseRequest(RequestModel):
    project_id: ProjectId
    phone: Phone
    paused: StrictBool


class PauseResponse(ResponseModel):
    status: Literal["paused", "active"]
    pending: int = Field(description="Events waiting for this registration")


class DisconnectRequest(RequestModel):
    project_id: ProjectId
    phone: Phone
    logout: StrictBool = False


class DisconnectResponse(ResponseModel):
    status: Literal["disconnected", "logged_out"]
    dropped: int = Field(description="Undelivered events of the registration, dropped with it")


class SendRequest(RequestModel):
    project_id: ProjectId
    phone: Phone
    to: RecipientField
    text: Caption | None = None
    file_url: HttpUrl | None = None
    file_name: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None
    # How Telegram shows the file (photo, document, voice, video, audio; a MIME type is mapped); absent: a document.
    file_type: Annotated[StrictStr, Field(min_length=1, max_length=127, examples=list(FILE_KINDS)),
                         AfterValidator(_file_kind)] | None = None
    reply_to: Annotated[StrictInt, Field(ge=1)] | None = None


class MediaPath(RequestModel):
    id: StrictStr = Field(description="The file's id from `media.url` of a webhook event")


class MediaLinkQuery(RequestModel):
    """The capability part of `media.url`: as signed by the server, used as it is."""

    expires: StrictStr = Field(description="Unix seconds after which the link is refused")
    signature: StrictStr = Field(description="HMAC-SHA256 of the id and expiry with the server's own key (hex)")


class ReadRequest(RequestModel):
    project_id: ProjectId
    phone: Phone
    chat: RecipientField = Field(description="The chat read: `@username`, numeric id, or `+phone`, as `to` of a send")
    max_id: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] = Field(
        description="Mark the client's messages up to this id read (0: all)")


class ReadResponse(ResponseModel):
    status: Literal["read"]


def _since(value: str) -> datetime.datetime:
    """An ISO 8601 date or date-time (UTC when it names no zone), not in the future."""
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO 8601 date or date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    if moment > datetime.datetime.now(datetime.timezone.utc):
        raise ValueError("must not be in the future")
    return moment


class HistoryImportRequest(RequestModel):
    project_id: ProjectId
    phone: Phone
    per_chat: Annotated[StrictInt, Field(ge=1, le=500)] = Field(
        50, description="Messages imported per private chat at most (the newest)")
    since: Annotated[StrictStr, Field(max_length=40), AfterValidator(_since)] | None = Field(
        None, description="ISO 8601 date or date-time: older messages are not imported (default: 30 days ago)")


class HistoryImportResponse(ResponseModel):
    job_id: str


class HistoryJobPath(RequestModel):
    job_id: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")]


class HistoryJobResponse(ResponseModel):
    job_id: str
    state: Literal["running", "done", "failed"]
    dialogs: int = Field(description="Private chats imported so far")
    messages: int = Field(description="Messages handed to the webhook outbox so far")
    error: str | None = None


class SendResponse(ResponseModel):
    status: Literal["sent"]
    message_id: int
    chat_id: int
    to_user_id: int | None
    date: str = Field(description="ISO 8601 UTC")


class StatusQuery(RequestModel):
    project_id: ProjectId
    phone: Phone | None = None


class WebhookStatus(ResponseModel):
    url: str
    # False after the receiver answered 410 Gone: messages wait until a connect registers the webhook again.
    enabled: bool
    # Paused by its integration (POST /integration/lovable/pause): messages wait, pending, until resumed.
    paused: bool
    events: list[str]
    batch: BatchInfo | None = Field(None, description="Batched delivery (null: one event per POST)")
    pending: int
    failed: int
    last_success_at: str | None
    last_error: str | None


class AccountStatusEntry(ResponseModel):
    phone: str
    authorized: bool
    connected: bool
    state: AccountState
    user_id: int | None
    username: str | None
    webhook: WebhookStatus | None


class StatusResponse(ResponseModel):
    accounts: list[AccountStatusEntry]


class MediaRelayRequest(RequestModel):
    """`POST /cluster/media` (between instances only): which message's file the holder should download."""

    event_id: str = Field(min_length=1, max_length=64)
    project_id: str = Field(min_length=1, max_length=128)
    phone: str = Field(min_length=1, max_length=32)
    chat_id: int
    message_id: int


class SendCodeRequest(RequestModel):
    project_id: ProjectId
    phone: Phone


class SendCodeResponse(ResponseModel):
    status: Literal["code_sent"]
    timeout: int | None


class SignInRequest(RequestModel):
    project_id: ProjectId
    phone: Phone
    code: Annotated[StrictStr, Field(pattern=r"^\s*[0-9]{3,12}\s*$")]


class SignInResponse(ResponseModel):
    status: LoginOutcome


# A QR login's id: random, URL-safe (crm_server.telegram.qr_login).
LoginId = Annotated[StrictStr, Field(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class PasswordRequest(RequestModel):
    project_id: ProjectId
    # The account of a code login; a QR login names its `login_id` instead (the route requires one of them).
    phone: Phone | None = None
    login_id: LoginId | None = None
    password: Annotated[StrictStr, Field(min_length=1, max_length=1024)]


class PasswordResponse(ResponseModel):
    status: Literal[LoginOutcome.AUTHORIZED]


class QrLoginRequest(RequestModel):
    project_id: ProjectId
    # Only this account may scan the QR code; without it, the account is the one that scans it.
    phone: Phone | None = None


class QrLoginResponse(ResponseModel):
    login_id: str
    status: Literal["qr"]
    url: str = Field(examples=["tg://login?token=AQID..."])
    expires_at: str


class QrLoginQuery(RequestModel):
    project_id: ProjectId
    login_id: LoginId


class QrLoginError(ResponseModel):
    code: str
    message: str
    field: str | None = None


class QrLoginStatusResponse(ResponseModel):
    status: Literal["qr", "password_required", "authorized", "expired"]
    # The QR code to show (while `qr`; it changes when the token is refreshed) and when it runs out.
    url: str | None = None
    expires_at: str | None = None
    # The account: as asked for, or the one that scanned it once authorized.
    phone: str | None = None
    # Why it ended, when it ended by an error (not by running out of time).
    error: QrLoginError | None = None


class AccountQuery(RequestModel):
    project_id: ProjectId


class AccountPath(RequestModel):
    phone: Phone


class LogoutResponse(ResponseModel):
    status: Literal["logged_out"]


class DeliveriesQuery(RequestModel):
    project_id: ProjectId
    # "failed" lists the dead letters (the contract's default view); "pending" the queue; "delivered" the last hour.
    state: Literal["failed", "dead", "pending", "delivered"] = "failed"
    limit: Annotated[int, Field(ge=1, le=1000, strict=False)] = 100


class DeliveryPath(RequestModel):
    id: Annotated[int, Field(ge=1, le=2**62, strict=False)]


class DeliveryEntry(ResponseModel):
    id: int
    event_id: str
    project_id: str
    phone: str
    chat_id: str
    message_id: int
    state: Literal["pending", "failed", "delivered"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None


class DeliveriesResponse(ResponseModel):
    deliveries: list[DeliveryEntry]


class RetryResponse(ResponseModel):
    status: Literal["queued"]
    id: int


class HealthResponse(ResponseModel):
    status: Literal["ok"]
    # With the admin key only: counts across every tenant.
    accounts_connected: int | None = None
    outbox_pending: int | None = None
    # This instance among those sharing the store, and the accounts whose lease it holds.
    instance_id: str | None = None
    accounts_held: int | None = None


class ErrorResponse(ResponseModel):
    success: Literal[False]
    error: str
    code: str
    field: str | None = None


# --- sandbox control (sandbox mode only) -------------------------------------------------------


class SandboxUserRequest(RequestModel):
    phone: Phone
    username: Annotated[StrictStr, Field(pattern=r"^@?[A-Za-z][A-Za-z0-9_]{2,31}$")] | None = None
    first_name: Annotated[StrictStr, Field(max_length=64)] | None = None
    last_name: Annotated[StrictStr, Field(max_length=64)] | None = None
    privacy_restricted: StrictBool = False


class SandboxUserResponse(ResponseModel):
    user_id: int


class SandboxAccountRequest(RequestModel):
    phone: Phone
    password: Annotated[StrictStr, Field(min_length=1, max_length=1024)] | None = None


class SandboxAccountResponse(ResponseModel):
    user_id: int


SandboxMediaKind = Literal["photo", "voice", "audio", "video", "video_note", "document", "sticker", "animation"]


class SandboxIncomingMedia(RequestModel):
    """A file the simulated user sends. `file_name` is kept as given (a hostile name is a test case for the
    server); the optional attributes are what Telegram would read from the file."""

    kind: SandboxMediaKind
    data_base64: Annotated[StrictStr, Field(min_length=1)]
    file_name: Annotated[StrictStr, Field(min_length=1, max_length=255)] | None = None
    mime_type: Annotated[StrictStr, Field(max_length=127, pattern=r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+$")] | None = None
    duration: Annotated[StrictInt, Field(ge=0, le=864000)] | None = None
    width: Annotated[StrictInt, Field(ge=1, le=20000)] | None = None
    height: Annotated[StrictInt, Field(ge=1, le=20000)] | None = None
    title: Annotated[StrictStr, Field(max_length=256)] | None = None
    performer: Annotated[StrictStr, Field(max_length=256)] | None = None
    # Telegram lists the file but refuses to serve its bytes (upload.getFile answers FILE_ID_INVALID).
    unavailable: StrictBool = False


class SandboxIncomingRequest(RequestModel):
    account_phone: Phone
    from_: RecipientField = Field(alias="from")
    # Required without media; with media it is the caption (at most 1024 characters) and may be empty.
    text: Annotated[StrictStr, Field(max_length=4096)] = ""
    # Checked field by field by the route (`media.kind`, `media.data_base64`...), so errors name the inner field.
    media: dict | None = Field(None, description="A file: {kind, data_base64, file_name?, mime_type?, duration?, "
                               "width?, height?, title?, performer?, unavailable?} (see SandboxIncomingMedia)")


class SandboxIncomingResponse(ResponseModel):
    message_id: int


# How many messages one bulk `POST /sandbox/incoming` may carry.
SANDBOX_INCOMING_BULK_MAX = 1000


class SandboxIncomingBulkRequest(RequestModel):
    """Many incoming messages in one call (`{messages: [...]}`), written in one transaction: the load generator of
    the benches costs one request per bulk instead of one per message."""

    # Each item is checked as one SandboxIncomingRequest by the route, so errors name `messages[3].from`.
    messages: list[Any] = Field(min_length=1, max_length=SANDBOX_INCOMING_BULK_MAX,
                                 description="Each a body of a single POST /sandbox/incoming")


class SandboxIncomingBulkResponse(ResponseModel):
    messages: list[SandboxIncomingResponse]


class SandboxSentQuery(RequestModel):
    account_phone: Phone


class SandboxSentMedia(ResponseModel):
    kind: SandboxMediaKind
    file_name: str | None
    size: int
    sha256: str


class SandboxSentMessage(ResponseModel):
    to_user_id: int
    text: str
    message_id: int
    date: str
    media: SandboxSentMedia | None = Field(None, description="Present when a file was sent")


class SandboxFloodRequest(RequestModel):
    account_phone: Phone
    seconds: Annotated[StrictInt, Field(ge=1, le=86400)]


class SandboxQrScanRequest(RequestModel):
    # What the QR code holds.
    url: Annotated[StrictStr, Field(min_length=17, max_length=256, pattern=r"^tg://login\?token=[A-Za-z0-9_-]+$")]
    # The logged-in account of the world that scans it.
    phone: Phone
    # False: the updateLoginToken push is lost on the way, as an update may be; the client learns of the scan only
    # from its next token export (its refresh).
    push: StrictBool = True


class SandboxQrScanResponse(ResponseModel):
    status: Literal["accepted"]
    user_id: int


class SandboxRevokeRequest(RequestModel):
    account_phone: Phone


class SandboxRequestCounts(ResponseModel):
    counts: dict[str, int]


class SandboxOkResponse(ResponseModel):
    status: Literal["ok"]


class SandboxOutgoingRequest(RequestModel):
    account_phone: Phone
    to: RecipientField = Field(description="The simulated user the account's owner writes to")
    text: Annotated[StrictStr, Field(max_length=4096)] = ""
    media: dict | None = Field(None, description="A file, as for /sandbox/incoming")


class SandboxEditRequest(RequestModel):
    account_phone: Phone
    from_: RecipientField = Field(alias="from", description="Who wrote the message: the chat's user, or the account")
    message_id: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
    text: Annotated[StrictStr, Field(min_length=1, max_length=4096)]


class SandboxDeleteRequest(RequestModel):
    account_phone: Phone
    message_ids: Annotated[list[Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]],
                           Field(min_length=1, max_length=100)]
    revoke: StrictBool = False


class SandboxReadRequest(RequestModel):
    account_phone: Phone
    from_: RecipientField = Field(alias="from", description="The client (it read the account's messages: outbox), "
                                  "or the account itself (its owner read the chat with `peer` elsewhere: inbox)")
    max_id: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
    peer: RecipientField | None = Field(None, description="The chat read, when `from` is the account itself")


class SandboxServiceMessageRequest(RequestModel):
    account_phone: Phone
    text: Annotated[StrictStr, Field(min_length=1, max_length=4096)]


class SandboxMessageResponse(ResponseModel):
    message_id: int


class SandboxUpdateResponse(ResponseModel):
    pts: int | None = Field(description="The account's pts after the update (null: nothing was deleted)")


class SandboxReadEntry(ResponseModel):
    direction: Literal["inbox", "outbox"]
    peer_id: int
    max_id: int
    date: str
