"""An unexpected exception in a route becomes the contract's JSON 500, logged once by type.

Not an `Exception` handler: Starlette runs that in its outermost middleware and then raises the exception on to the
server, and uvicorn logs it again, traceback and message included ("Exception in ASGI application") — the message
of an exception can quote what a request carried, which is why our own line names the type only. This middleware
sits inside that outermost one and answers instead of re-raising.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crm_server import errors
from crm_server.metrics import count_error

log = logging.getLogger(__name__)


class UnexpectedErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise  # half an answer is out: only the server can end the connection
            request = Request(scope)
            # Type only: a message or traceback locals could carry a request's secrets.
            log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
            error = errors.CrmError()
            count_error(scope["app"], error.code)  # scope["app"]: set by Starlette before any middleware runs
            await errors.error_response(error)(scope, receive, send)
