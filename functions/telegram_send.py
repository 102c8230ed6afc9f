"""telegram-send: the CRM's one entry point for sending to a client on Telegram, whatever the provider.

Routes by the chosen integration's provider (crm_server or Wappi.pro); when that integration fails with a transport
error or 5xx, fails over once to another enabled Telegram integration and records which one sent.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.integrations import ALL_PROVIDERS
from functions._shared.send_handler import handle_send


async def handler(request: Request) -> JSONResponse:
    # Any provider may send, and a chosen integration that is down hands the message to another one once.
    return await handle_send(request, providers=ALL_PROVIDERS, fail_over=True)
