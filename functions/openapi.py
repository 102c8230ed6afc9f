"""The OpenAPI 3.1 description of the functions host: every function's body, answer and error codes, generated from
the pydantic models in functions/*.py and the error classes of _shared/errors.py, plus the webhook crm_server posts.

The table below is the functions' surface as documentation (host.FUNCTIONS is the same surface as routing); a
function's error codes are those of the error classes its own module and the shared modules it uses name.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from functions import (
    telegram_crm_auth,
    telegram_crm_connect,
    telegram_crm_mark_read,
    telegram_crm_sandbox,
    telegram_crm_status,
    telegram_crm_webhook,
    telegram_integration_remove,
    telegram_integration_save,
    telegram_providers,
)
from functions._shared import (
    auth,
    crm_client,
    errors,
    event_context,
    event_rpc,
    integrations,
    messages,
    sealed_settings,
    send_handler,
    sending,
    signature,
    wappi_client,
)
from functions._shared.errors import FunctionError

REF_TEMPLATE = "#/components/schemas/{model}"
# What the gateway itself may answer for any function (host.py): bad JSON, a bad body, too large, a wrong method,
# the database down, and anything unexpected.
GATEWAY_ERRORS: tuple[type[FunctionError], ...] = (
    errors.MalformedBodyError, errors.ValidationFailedError, errors.PayloadTooLargeError,
    errors.MethodNotAllowedError, errors.DatabaseError, errors.FunctionError,
)
USER_JWT_ERRORS: tuple[type[FunctionError], ...] = (errors.MissingTokenError, errors.InvalidTokenError)
SEND_MODULES = (send_handler, sending, integrations, messages, crm_client, wappi_client, sealed_settings, auth)
IDEMPOTENCY_HEADER = {"Idempotency-Key": "Sent once and stored once per key: retry a lost answer with the same key"}
WEBHOOK_HEADERS = {
    "X-Lovable-Secret": "The secret given at connect",
    "webhook-id": "Standard Webhooks: the event id",
    "webhook-timestamp": "Standard Webhooks: unix seconds",
    "webhook-signature": "Standard Webhooks: v1,<base64 HMAC-SHA256(secret, '<id>.<timestamp>.<body>')>",
}


@dataclass(frozen=True)
class FunctionDoc:
    name: str
    summary: str
    body: type[BaseModel] | None
    answer: type[BaseModel] | None
    modules: tuple[ModuleType, ...]  # where its error classes are named (its own module first)
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def _send_doc(name: str, summary: str) -> FunctionDoc:
    return FunctionDoc(name, summary, sending.SendRequest, sending.SendResponse, SEND_MODULES,
                       headers=IDEMPOTENCY_HEADER)


FUNCTION_DOCS: tuple[FunctionDoc, ...] = (
    FunctionDoc("telegram-crm-connect", "Connect a crm_server account (URL, key, phone) as an integration; "
                "registers the webhook with crm_server", telegram_crm_connect.ConnectRequest,
                telegram_crm_connect.ConnectResponse, (telegram_crm_connect, auth, crm_client, sealed_settings)),
    _send_doc("telegram-crm-send", "Send a message to a client through a telegram_crm integration (no failover)"),
    FunctionDoc("telegram-crm-webhook", "What crm_server posts for each event of an account: an incoming message "
                "(this body: stored as the client's chat message), or by `type` message.outgoing, message.edited, "
                "message.deleted, message.read, account.status, account.login_alert (the contract's Conversation "
                "events); an unknown type is answered 200 {success, ignored}. Also a batch {batch_id, project_id, "
                "account_phone?, events: [...]} (1..500), answered {success, results: [{event_id, ok, duplicate?, "
                "error?, retry?}]} (the contract's Batched delivery)", telegram_crm_webhook.WebhookPayload,
                telegram_crm_webhook.WebhookResponse,
                (telegram_crm_webhook, signature, messages, sealed_settings, event_context, event_rpc),
                query={"key": "The integration's webhook key (part of the URL crm_server was given)"},
                headers=WEBHOOK_HEADERS),
    _send_doc("telegram-send", "Send a message to a client through the chosen or primary integration of any "
                               "provider, failing over once to another when it is down"),
    FunctionDoc("telegram-providers", "The providers and their form fields (no secrets)", None, None,
                (telegram_providers,)),
    FunctionDoc("telegram-crm-auth", "One login step of an integration's Telegram account: send-code, sign-in, "
                "password; or by QR code: qr (answers loginId, url, expiresAt and the code as SVG, qrSvg), then "
                "qr-status with the loginId until authorized (password with the loginId when 2FA asks for it)",
                telegram_crm_auth.AuthRequest, telegram_crm_auth.AuthResponse,
                (telegram_crm_auth, auth, crm_client, sealed_settings)),
    FunctionDoc("telegram-crm-status", "The status of one or every integration of the caller's organization",
                telegram_crm_status.StatusRequest, telegram_crm_status.StatusResponse,
                (telegram_crm_status, auth, crm_client, sealed_settings),
                query={"integrationId": "GET: one integration (none: every one)"}),
    FunctionDoc("telegram-crm-mark-read", "A manager opened a client's chat: Telegram marks it read up to the "
                "client's latest message, and so does the CRM", telegram_crm_mark_read.MarkReadRequest,
                telegram_crm_mark_read.MarkReadResponse,
                (telegram_crm_mark_read, auth, crm_client, sealed_settings, integrations, event_rpc)),
    FunctionDoc("telegram-crm-sandbox", "Local sandbox only: a simulated user writes to an integration's account",
                telegram_crm_sandbox.SandboxIncomingRequest, telegram_crm_sandbox.SandboxIncomingResponse,
                (telegram_crm_sandbox, auth, crm_client, sealed_settings)),
    FunctionDoc("telegram-integration-save", "Create or update a Wappi integration, or enable/disable any",
                telegram_integration_save.SaveRequest, telegram_integration_save.SaveResponse,
                (telegram_integration_save, auth, crm_client, sealed_settings)),
    FunctionDoc("telegram-integration-remove", "Remove an integration, telling crm_server first (optionally "
                "logging the account out)", telegram_integration_remove.RemoveRequest,
                telegram_integration_remove.RemoveResponse, (telegram_integration_remove, auth, crm_client,
                                                             sealed_settings)),
)


def named_errors(module: ModuleType) -> set[type[FunctionError]]:
    return {value for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, FunctionError)}


def errors_of(doc: FunctionDoc, verify_jwt: bool) -> list[type[FunctionError]]:
    found: set[type[FunctionError]] = set(GATEWAY_ERRORS)
    if verify_jwt:
        found |= set(USER_JWT_ERRORS)
    for module in doc.modules:
        found |= named_errors(module)
    # A class whose code is set per instance (ConnectRefusedError: crm_server's own) is listed by its class code.
    return sorted(found, key=lambda error: (error.status_code, error.code))


def _error_schema(codes: list[str]) -> dict[str, Any]:
    return {"type": "object", "required": ["success", "error", "code"], "properties": {
        "success": {"const": False}, "error": {"type": "string", "description": "For people, never for code"},
        "code": {"enum": codes}, "field": {"type": "string", "description": "The field at fault, when one is"},
        "upstreamCode": {"type": "string"}, "idempotencyKey": {"type": "string"}}}


def _operation(doc: FunctionDoc, method: str, verify_jwt: bool, refs: Mapping[Any, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": f"{doc.name}-{method.lower()}", "summary": doc.summary,
                                 "tags": ["functions"], "responses": {}}
    parameters = [{"name": name, "in": "query", "required": name == "key", "description": text,
                   "schema": {"type": "string"}} for name, text in doc.query.items()]
    parameters += [{"name": name, "in": "header", "required": False, "description": text,
                    "schema": {"type": "string"}} for name, text in doc.headers.items()]
    if parameters:
        operation["parameters"] = parameters
    if doc.body is not None and method != "GET":
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": refs[(doc.body, "validation")]}}}
    answer = refs[(doc.answer, "serialization")] if doc.answer is not None else {"type": "object"}
    operation["responses"]["200"] = {"description": "Success", "content": {"application/json": {"schema": answer}}}
    by_status: dict[int, list[str]] = defaultdict(list)
    for error in errors_of(doc, verify_jwt):
        if error.code not in by_status[error.status_code]:
            by_status[error.status_code].append(error.code)
    for status, codes in sorted(by_status.items()):
        operation["responses"][str(status)] = {"description": ", ".join(codes), "content": {
            "application/json": {"schema": _error_schema(codes)}}}
    operation["security"] = [{"UserJwt": []}] if verify_jwt else []
    return operation


def build_openapi(methods: Mapping[str, tuple[str, ...]], verify_jwt: Mapping[str, bool],
                  server_url: str) -> dict[str, Any]:
    """`methods` and `verify_jwt` per function name, as the host routes them; `server_url` ends in /functions/v1."""
    wanted: list[tuple[type[BaseModel], Any]] = []
    for doc in FUNCTION_DOCS:
        if doc.body is not None:
            wanted.append((doc.body, "validation"))
        if doc.answer is not None:
            wanted.append((doc.answer, "serialization"))
    refs, definitions = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for doc in FUNCTION_DOCS:
        for method in methods.get(doc.name, ()):
            paths.setdefault(f"/{doc.name}", {})[method.lower()] = _operation(
                doc, method, verify_jwt.get(doc.name, True), refs)
    webhook = telegram_crm_webhook.WebhookPayload
    return {
        "openapi": "3.1.0",
        "info": {"title": "telegram-crm functions", "version": "0.1.0",
                 "description": "The Supabase edge functions of telegram-crm, in Python. Functions with a lock need "
                                "`Authorization: Bearer <a user's access token>` of the Supabase project."},
        "servers": [{"url": server_url}],
        "paths": paths,
        # What crm_server posts to the webhook URL it was given at connect (telegram-crm-webhook receives it).
        "webhooks": {"telegram-message": {"post": {
            "summary": "An incoming private Telegram message, signed (Standard Webhooks) and retried until a 2xx",
            "parameters": [{"name": name, "in": "header", "required": True, "description": text,
                            "schema": {"type": "string"}} for name, text in WEBHOOK_HEADERS.items()],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": refs[(webhook, "validation")]}}},
            "responses": {"200": {"description": "Stored (or a duplicate)"}}}}},
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"UserJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                            "description": "A Supabase access token of a member of the "
                                                           "organization"}},
        },
    }
