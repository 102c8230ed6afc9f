"""telegram-providers: the messaging providers and the admin form fields each needs, for the admin page to render."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from functions._shared.providers import providers_document


async def handler(request: Request) -> JSONResponse:
    # Static and secret-free: no organization to load, nothing to store.
    return JSONResponse(providers_document(), headers={"Cache-Control": "public, max-age=300"})
