"""The OpenAPI 3.1 description of crm_server, built from the pydantic models (Swagger UI shows it at `/docs`).

The operation table below is the API surface as documentation; app.py is the same surface as routing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from crm_server.routes import models

REF_TEMPLATE = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    response: type[BaseModel] | None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: type[BaseModel] | None = None
    errors: tuple[int, ...] = (400, 401, 403, 422)
    sandbox: bool = False
    auth: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    response_is_list: bool = False
    # Other shapes the same route takes and answers (oneOf): e.g. a bulk of what `body` describes one of.
    body_alternatives: tuple[type[BaseModel], ...] = ()
    response_alternatives: tuple[type[BaseModel], ...] = ()


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/integration/lovable/connect",
        "Register an account (project_id, phone) and its webhook; idempotent, updates the webhook",
        models.ConnectResponse,
        body=models.ConnectRequest,
    ),
    Operation(
        "POST",
        "/integration/lovable/pause",
        "Pause (events stay pending, never dead) or resume (delivered in order) an account's webhook",
        models.PauseResponse,
        body=models.PauseRequest,
        errors=(400, 401, 403, 404, 422),
    ),
    Operation(
        "POST",
        "/integration/lovable/disconnect",
        "Remove an account's webhook registration and its undelivered events; with logout, log it out too",
        models.DisconnectResponse,
        body=models.DisconnectRequest,
    ),
    Operation(
        "POST",
        "/telegram/send",
        "Send a text, or a file by URL (fetched by the server, then uploaded to Telegram as its `file_type`) with "
        "`text` as its caption (may be empty)",
        models.SendResponse,
        body=models.SendRequest,
        errors=(400, 401, 403, 404, 409, 422, 429, 502, 503),
        headers={"Idempotency-Key": "Optional; the same key within 24 h returns the first result without sending"},
    ),
    Operation(
        "POST",
        "/telegram/read",
        "Mark the client's messages of a chat read up to `max_id` (the client sees them read)",
        models.ReadResponse,
        body=models.ReadRequest,
        errors=(400, 401, 403, 404, 409, 422, 429, 502, 503),
    ),
    Operation(
        "POST",
        "/telegram/history/import",
        "Import the account's recent private conversations as `message` / `message.outgoing` events with "
        "`history: true` (answered 202 with the job's id)",
        models.HistoryImportResponse,
        body=models.HistoryImportRequest,
        errors=(400, 401, 403, 404, 409, 422, 503),
    ),
    Operation(
        "GET",
        "/telegram/history/import/{job_id}",
        "A history import's progress",
        models.HistoryJobResponse,
        path_params=models.HistoryJobPath,
        errors=(401, 404, 422),
    ),
    Operation(
        "GET",
        "/telegram/status",
        "Accounts of a project: authorized, connected, webhook",
        models.StatusResponse,
        query=models.StatusQuery,
    ),
    Operation(
        "POST",
        "/telegram/auth/send-code",
        "Start a login: Telegram sends a code to the account",
        models.SendCodeResponse,
        body=models.SendCodeRequest,
        errors=(400, 401, 403, 422, 429, 502, 503),
    ),
    Operation(
        "POST",
        "/telegram/auth/sign-in",
        "Finish a login with the code (or learn that a 2FA password is required)",
        models.SignInResponse,
        body=models.SignInRequest,
        errors=(400, 401, 403, 409, 422, 429, 502),
    ),
    Operation(
        "POST",
        "/telegram/auth/password",
        "Finish a login with the 2FA password: `phone` of a code login, or `login_id` of a QR login",
        models.PasswordResponse,
        body=models.PasswordRequest,
        errors=(400, 401, 403, 404, 409, 422, 429, 502),
    ),
    Operation(
        "POST",
        "/telegram/auth/qr",
        "Start a QR login: show `url` as a QR code to a phone logged in to Telegram (Settings → Devices → Link "
        "Desktop Device); without `phone`, the account is the one that scans it. Poll GET /telegram/auth/qr",
        models.QrLoginResponse,
        body=models.QrLoginRequest,
        errors=(400, 401, 403, 409, 422, 429, 502, 503),
    ),
    Operation(
        "GET",
        "/telegram/auth/qr",
        "Follow a QR login: qr (show `url`, refreshed before `expires_at`), password_required (POST "
        "/telegram/auth/password with the login_id), authorized (`phone` is logged in), expired",
        models.QrLoginStatusResponse,
        query=models.QrLoginQuery,
        errors=(400, 401, 403, 404, 422),
    ),
    Operation(
        "DELETE",
        "/telegram/accounts/{phone}",
        "Log the account out of Telegram and forget it",
        models.LogoutResponse,
        query=models.AccountQuery,
        path_params=models.AccountPath,
        errors=(400, 401, 403, 404, 422),
    ),
    Operation("GET", "/health", "Liveness (no API key); with the admin key also the counts across every tenant",
              models.HealthResponse, errors=(), auth=False),
    Operation("GET", "/media/{id}", "An incoming message's file, by the signed link of a webhook's `media.url` "
              "(no API key; 403 when forged or expired, 404 when no longer kept; Range requests answered)", None,
              query=models.MediaLinkQuery, path_params=models.MediaPath, errors=(403, 404), auth=False),
    Operation("GET", "/metrics", "Prometheus metrics (admin key)", None, errors=(401, 403)),
    Operation("GET", "/openapi.json", "This description", None, errors=(401,)),
    Operation("GET", "/docs", "Swagger UI for this description (no key: type it into Authorize)", None, errors=(),
              auth=False),
    Operation(
        "POST", "/sandbox/qr-scan", "A logged-in phone of the world scans a QR login code (auth.acceptLoginToken)",
        models.SandboxQrScanResponse, body=models.SandboxQrScanRequest, sandbox=True, errors=(400, 401, 404, 422),
    ),
    Operation(
        "POST", "/sandbox/users", "Create a simulated Telegram user", models.SandboxUserResponse,
        body=models.SandboxUserRequest, sandbox=True,
    ),
    Operation(
        "POST", "/sandbox/accounts", "Pre-create an account (optionally with a 2FA password); the code is 12345",
        models.SandboxAccountResponse, body=models.SandboxAccountRequest, sandbox=True,
    ),
    Operation(
        "POST", "/sandbox/incoming", "A simulated user writes to an account (one not logged in yet "
        "finds it in its dialogs); or many at once: {messages: [<that body>, ...]} (1..1000, one transaction, "
        "each still pushed as its own update) answered {messages: [{message_id}, ...]}",
        models.SandboxIncomingResponse, body=models.SandboxIncomingRequest, sandbox=True,
        body_alternatives=(models.SandboxIncomingBulkRequest,),
        response_alternatives=(models.SandboxIncomingBulkResponse,),
    ),
    Operation(
        "GET", "/sandbox/sent", "What an account has sent", models.SandboxSentMessage,
        query=models.SandboxSentQuery, sandbox=True, response_is_list=True,
    ),
    Operation(
        "POST", "/sandbox/flood", "The account's next send gets FLOOD_WAIT", models.SandboxOkResponse,
        body=models.SandboxFloodRequest, sandbox=True,
    ),
    Operation(
        "POST", "/sandbox/revoke", "Terminate the account's sessions (AUTH_KEY_UNREGISTERED from now on)",
        models.SandboxOkResponse, body=models.SandboxRevokeRequest, sandbox=True,
    ),
    Operation(
        "POST", "/sandbox/outgoing", "The account's owner writes from another device (sessions get out=True)",
        models.SandboxMessageResponse, body=models.SandboxOutgoingRequest, sandbox=True,
    ),
    Operation(
        "POST", "/sandbox/edit", "A message of the account's chat is edited (updateEditMessage)",
        models.SandboxUpdateResponse, body=models.SandboxEditRequest, sandbox=True,
    ),
    Operation(
        "POST", "/sandbox/delete", "Messages of the account are deleted (updateDeleteMessages, no chat id)",
        models.SandboxUpdateResponse, body=models.SandboxDeleteRequest, sandbox=True,
    ),
    Operation(
        "POST", "/sandbox/read", "A read receipt: the client read the account's messages (outbox), or the account "
        "read the chat with `peer` from another device (inbox)", models.SandboxUpdateResponse,
        body=models.SandboxReadRequest, sandbox=True,
    ),
    Operation(
        "GET", "/sandbox/reads", "The account's read receipts, both directions", models.SandboxReadEntry,
        query=models.SandboxSentQuery, sandbox=True, response_is_list=True,
    ),
    Operation(
        "POST", "/sandbox/gap", "The account's next catch-up with something to fetch answers differenceTooLong",
        models.SandboxOkResponse, body=models.SandboxRevokeRequest, sandbox=True,
    ),
    Operation(
        "POST", "/sandbox/service-message", "Telegram's service user (777000) writes to the account",
        models.SandboxMessageResponse, body=models.SandboxServiceMessageRequest, sandbox=True,
    ),
    Operation(
        "GET", "/sandbox/requests", "Requests the sandbox answered, by TL type", models.SandboxRequestCounts,
        sandbox=True,
    ),
)


def _parameters(model: type[BaseModel] | None, location: str) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": location, "required": name in required or location == "path", "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def build_openapi(*, sandbox: bool) -> dict[str, Any]:
    operations = [op for op in OPERATIONS if sandbox or not op.sandbox]
    wanted: list[tuple[type[BaseModel], Any]] = [(models.ErrorResponse, "serialization")]
    for op in operations:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
        wanted += [(model, "validation") for model in op.body_alternatives]
        wanted += [(model, "serialization") for model in op.response_alternatives]
    refs, definitions = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF_TEMPLATE)

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        operation: dict[str, Any] = {"summary": op.summary, "responses": {}}
        parameters = _parameters(op.path_params, "path") + _parameters(op.query, "query")
        parameters += [
            {"name": name, "in": "header", "required": False, "description": text, "schema": {"type": "string"}}
            for name, text in op.headers.items()
        ]
        if parameters:
            operation["parameters"] = parameters
        if op.body is not None:
            body_schema = refs[(op.body, "validation")]
            if op.body_alternatives:
                body_schema = {"oneOf": [body_schema, *(refs[(model, "validation")] for model in op.body_alternatives)]}
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        if op.response is not None:
            schema = refs[(op.response, "serialization")]
            if op.response_is_list:
                schema = {"type": "array", "items": schema}
            if op.response_alternatives:
                schema = {"oneOf": [schema, *(refs[(model, "serialization")] for model in op.response_alternatives)]}
            operation["responses"]["200"] = {"description": "Success", "content": {"application/json": {"schema": schema}}}
        else:
            operation["responses"]["200"] = {"description": "Success"}
        for status in op.errors:
            operation["responses"][str(status)] = {
                "description": "Error",
                "content": {"application/json": {"schema": refs[(models.ErrorResponse, "serialization")]}},
            }
        if op.auth:
            operation["security"] = [{"ApiKey": []}]
        else:
            operation["security"] = []
        paths.setdefault(op.path, {})[op.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crm_server",
            "version": "0.1.0",
            "description": "Self-hosted Telegram server for the CRM: many Telegram accounts behind one HTTP API.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"ApiKey": []}],
    }

