"""Calls to crm_server (the self-hosted Telegram server) for one integration, over the process's shared HTTP client.

Transport failures become `CrmServerUnreachableError`; error answers become the error our caller should see
(`errors.crm_server_error`), so the handlers never look at crm_server's status codes themselves. Nothing the server
at crmApiUrl says in an error reaches our caller but its status class and a code of crm_server's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from functions._shared.crm_addresses import AddressRefused
from functions._shared.errors import (
    NOT_SENT_TRANSPORT_ERRORS,
    CrmServerAddressRefusedError,
    CrmServerRejectedError,
    CrmServerUnreachableError,
    Delivery,
    SendOutcomeUnknownError,
    crm_server_error,
    retry_after_seconds,
)

log = logging.getLogger("functions.crm_client")


# --- crm_server's answers -------------------------------------------------------------------------------------------

class CrmAccount(BaseModel):
    model_config = ConfigDict(extra="ignore")

    authorized: bool = False
    user_id: int | str | None = None
    username: str | None = None


class CrmConnectResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str
    project_id: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    account: CrmAccount | None = None
    # "standard-webhooks" when the server signs every delivery (ours does; a server of the original plan is silent).
    signing: str | None = None


class CrmSendResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = "sent"
    message_id: int | str | None = None
    chat_id: int | str | None = None
    to_user_id: int | str | None = None
    date: str | int | None = None


class CrmClient:
    """One integration's crm_server. `http` must be the runtime's `crm_http`, whose transport decides which
    addresses may be reached (checked_transport.py)."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, api_key: str, *, timeout: float,
                 send_timeout: float) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._send_timeout = send_timeout

    async def connect(self, *, project_id: str, webhook_url: str, phone: str, secret: str,
                      events: Sequence[str] = ("message",),
                      batch: Mapping[str, int] | None = None) -> CrmConnectResult:
        # secret_header False: our webhook verifies signatures, so the secret itself need never travel with a delivery
        # (a server of the original plan ignores the field and keeps sending it). `events`: the types the webhook
        # receives (the contract's "Conversation events"); a server that predates them ignores the field. `batch`:
        # `{max_events, max_wait_ms}` for batched delivery, null for one event per POST (the contract's "Batched
        # delivery"); sent either way, so that re-connecting turns batching off too. Ignored by older servers.
        body = {"project_id": project_id, "webhook_url": webhook_url, "phone": phone, "secret": secret,
                "secret_header": False, "events": list(events), "batch": dict(batch) if batch is not None else None}
        data = await self._post("/integration/lovable/connect", body, timeout=self._timeout)
        return _parse(CrmConnectResult, data, "/integration/lovable/connect")

    async def pause(self, *, project_id: str, phone: str, paused: bool) -> dict[str, Any]:
        return await self._post("/integration/lovable/pause",
                                {"project_id": project_id, "phone": phone, "paused": paused}, timeout=self._timeout)

    async def disconnect(self, *, project_id: str, phone: str, logout: bool = False) -> dict[str, Any]:
        return await self._post("/integration/lovable/disconnect",
                                {"project_id": project_id, "phone": phone, "logout": logout}, timeout=self._timeout)

    async def send(self, *, project_id: str, phone: str, to: str, text: str | None, file_url: str | None = None,
                   file_name: str | None = None, file_type: str | None = None,
                   idempotency_key: str | None = None) -> CrmSendResult:
        body: dict[str, Any] = {"project_id": project_id, "phone": phone, "to": to}
        optional = {"text": text, "file_url": file_url, "file_name": file_name, "file_type": file_type}
        body.update({name: value for name, value in optional.items() if value})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        data = await self._post("/telegram/send", body, timeout=self._send_timeout, headers=headers, sending=True)
        return _parse(CrmSendResult, data, "/telegram/send")

    async def read(self, *, project_id: str, phone: str, chat: str, max_id: int) -> dict[str, Any]:
        """Mark the chat read up to `max_id` on Telegram (the client sees the double tick)."""
        return await self._post("/telegram/read", {"project_id": project_id, "phone": phone, "chat": chat,
                                                   "max_id": max_id}, timeout=self._timeout)

    # The admin page's operations on an account: status, login steps (code, then 2FA password).
    async def status(self, *, project_id: str, phone: str | None = None) -> dict[str, Any]:
        params = {"project_id": project_id, **({"phone": phone} if phone else {})}
        return await self._request("GET", "/telegram/status", params=params, timeout=self._timeout)

    async def send_code(self, *, project_id: str, phone: str) -> dict[str, Any]:
        return await self._post("/telegram/auth/send-code", {"project_id": project_id, "phone": phone},
                                timeout=self._send_timeout)

    async def sign_in(self, *, project_id: str, phone: str, code: str) -> dict[str, Any]:
        return await self._post("/telegram/auth/sign-in", {"project_id": project_id, "phone": phone, "code": code},
                                timeout=self._send_timeout)

    async def check_password(self, *, project_id: str, phone: str, password: str,
                             login_id: str | None = None) -> dict[str, Any]:
        # A QR login names its login_id: the account is the one that scanned it.
        who = {"login_id": login_id} if login_id else {"phone": phone}
        return await self._post("/telegram/auth/password", {"project_id": project_id, **who, "password": password},
                                timeout=self._send_timeout)

    async def start_qr_login(self, *, project_id: str, phone: str | None) -> dict[str, Any]:
        return await self._post("/telegram/auth/qr", {"project_id": project_id, **({"phone": phone} if phone else {})},
                                timeout=self._send_timeout)

    async def qr_login_status(self, *, project_id: str, login_id: str) -> dict[str, Any]:
        return await self._request("GET", "/telegram/auth/qr", params={"project_id": project_id, "login_id": login_id},
                                   timeout=self._timeout)

    # Sandbox control (crm_server on the sandbox only, admin key): a simulated user writes to an account.
    async def sandbox_user(self, *, phone: str, first_name: str | None = None,
                           username: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"phone": phone}
        body.update({name: value for name, value in (("first_name", first_name), ("username", username)) if value})
        return await self._post("/sandbox/users", body, timeout=self._timeout)

    async def sandbox_incoming(self, *, account_phone: str, sender: str, text: str,
                               media: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"account_phone": account_phone, "from": sender, "text": text}
        if media is not None:
            body["media"] = media
        return await self._post("/sandbox/incoming", body, timeout=self._timeout)

    async def _post(self, path: str, body: dict[str, Any], *, timeout: float,
                    headers: dict[str, str] | None = None, sending: bool = False) -> dict[str, Any]:
        return await self._request("POST", path, body=body, timeout=timeout, headers=headers, sending=sending)

    async def _request(self, method: str, path: str, *, timeout: float, body: dict[str, Any] | None = None,
                       params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                       sending: bool = False) -> dict[str, Any]:
        url = self._base_url + path
        try:
            response = await self._http.request(method, url, json=body, params=params, timeout=timeout,
                                                headers={"X-API-Key": self._api_key, **(headers or {})})
        except AddressRefused as exc:
            # The transport refused the URL itself (checked_transport.py): nothing was sent.
            log.warning("crm_server call to %s refused: %s", url, exc)
            raise CrmServerAddressRefusedError(f"{CrmServerAddressRefusedError.default_message}: {exc}") from exc
        except httpx.HTTPError as exc:
            # The reason stays in our log: for the caller, whatever failed "could not be reached" (refused,
            # reset, timed out, another protocol), so the answer cannot tell an open port from a closed one.
            log.warning("crm_server unreachable at %s: %r (%r)", url, exc, exc.__cause__)
            if sending and not isinstance(exc, NOT_SENT_TRANSPORT_ERRORS):
                # The request was sent and no answer came: the message may be out (crm_server dedupes a retry).
                raise SendOutcomeUnknownError() from exc
            raise CrmServerUnreachableError(
                retryable=True,
                delivery=Delivery.NOT_SENT_HERE if isinstance(exc, NOT_SENT_TRANSPORT_ERRORS) else Delivery.UNKNOWN,
            ) from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.is_success:
            if not isinstance(data, dict):
                raise CrmServerRejectedError(f"The CRM Telegram server answered {path} with something that is not "
                                             f"JSON", retryable=True, upstream_status=response.status_code)
            return data
        # Only the status, crm_server's code and Retry-After are read from an error: never its words (see
        # errors.crm_server_error), which stay in our log, shortened.
        code = data.get("code") if isinstance(data, dict) else None
        log.info("crm_server answered %s %s: %s %.200r", path, response.status_code, code,
                 data.get("error") if isinstance(data, dict) else response.text)
        raise crm_server_error(response.status_code, code if isinstance(code, str) else None,
                               retry_after_seconds(response.headers.get("retry-after")))


def _parse(model: type[BaseModel], data: dict[str, Any], path: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CrmServerRejectedError(f"The CRM Telegram server answered {path} in an unexpected shape",
                                     upstream_status=200) from exc
