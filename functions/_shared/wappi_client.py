"""Calls to Wappi.pro's personal-Telegram API (see WAPPI.md): sync text send and file by URL.

Wappi reports errors as non-2xx answers or as 2xx `{"status": "error", "detail": ...}`, sometimes not in JSON; all of
them become a `WappiError` (a `RecipientNotFoundError` when Telegram does not know the address), retryable (worth a
failover) for transport errors and 5xx.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from functions._shared.errors import (
    NOT_SENT_TRANSPORT_ERRORS,
    Delivery,
    RecipientNotFoundError,
    SendOutcomeUnknownError,
    WappiAuthFailedError,
    WappiError,
    WappiUnreachableError,
)
from functions._shared.rows import SentMessage, WappiSettings

log = logging.getLogger("functions.wappi_client")

# Detail texts meaning "Telegram does not know this recipient": the next way to address the client may work.
RECIPIENT_NOT_FOUND_MARKERS = ("PEER_NOT_FOUND", "IMPORT_FAILED", "no peer")


class WappiClient:
    def __init__(self, http: httpx.AsyncClient, base_url: str, *, timeout: float) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout

    async def send_text(self, settings: WappiSettings, recipient: str, body: str) -> SentMessage:
        data = await self._request("POST", "/tapi/sync/message/send", settings,
                                   json={"recipient": recipient, "body": body})
        return _sent(data)

    async def send_file_by_url(self, settings: WappiSettings, recipient: str, url: str, caption: str | None = None,
                               file_name: str | None = None) -> SentMessage:
        payload: dict[str, Any] = {"recipient": recipient, "url": url}
        if caption:
            payload["caption"] = caption
        if file_name:
            payload["file_name"] = file_name
        data = await self._request("POST", "/tapi/sync/message/file/url/send", settings, json=payload)
        return _sent(data)

    async def _request(self, method: str, path: str, settings: WappiSettings,
                       json: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self._http.request(method, self._base_url + path, json=json, timeout=self._timeout,
                                                 params={"profile_id": settings.profileId},
                                                 headers={"Authorization": settings.apiToken})
        except httpx.HTTPError as exc:
            log.warning("Wappi unreachable at %s: %r", self._base_url, exc)
            if not isinstance(exc, NOT_SENT_TRANSPORT_ERRORS):
                raise SendOutcomeUnknownError() from exc  # sent, never answered: it may be out
            raise WappiUnreachableError(f"Wappi.pro could not be reached: {str(exc) or type(exc).__name__}",
                                        retryable=True) from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        detail = _detail(data, response)
        if response.status_code >= 500:
            # 503 is a refusal before the work (maintenance, overload); any other 5xx may come after the send.
            raise WappiError(f"Wappi.pro failed ({response.status_code}): {detail}", retryable=True,
                             upstream_status=response.status_code,
                             delivery=Delivery.NOT_SENT_HERE if response.status_code == 503 else Delivery.UNKNOWN)
        if response.status_code in (401, 403):
            raise WappiAuthFailedError(f"Wappi.pro rejected the integration's API token: {detail}",
                                       upstream_status=response.status_code)
        if not response.is_success or not isinstance(data, dict) or data.get("status") == "error":
            if any(marker.lower() in detail.lower() for marker in RECIPIENT_NOT_FOUND_MARKERS):
                raise RecipientNotFoundError(f"Telegram cannot find this recipient: {detail}",
                                             upstream_status=response.status_code)
            # Wappi said no (a 4xx, or `status: error`); an answer we cannot read says nothing about the message.
            refused = not response.is_success or isinstance(data, dict)
            raise WappiError(f"Wappi.pro returned an error: {detail}", upstream_status=response.status_code,
                             delivery=Delivery.NOT_SENT if refused else Delivery.UNKNOWN)
        return data


def _detail(data: object, response: httpx.Response) -> str:
    if isinstance(data, dict):
        for key in ("detail", "error", "message"):
            if data.get(key):
                return str(data[key])[:300]
    return response.text[:300] or response.reason_phrase


def _sent(data: dict[str, Any]) -> SentMessage:
    message_id = data.get("message_id") or data.get("id")
    return SentMessage(message_id=str(message_id) if message_id is not None else None,
                       chat_id=str(data["chat_id"]) if data.get("chat_id") is not None else None)
