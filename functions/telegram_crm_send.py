"""telegram-crm-send: a manager's message to a client, sent from a Telegram account on the CRM server.

Its handler is telegram-send's (`_shared/send_handler.py`, which says how a retried send sends once), restricted to
crm_server's accounts and without the failover.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.send_handler import handle_send


async def handler(request: Request) -> JSONResponse:
    # Only the organization's crm_server accounts send, and without a failover: the caller chose this provider.
    return await handle_send(request, providers=("telegram_crm",), fail_over=False)
