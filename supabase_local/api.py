"""The local Supabase API host: one port serving `/rest/v1`, further apps such as `/storage/v1` and `/functions/v1`,
and `/health`.

Starlette does not run a mounted app's lifespan, so this app runs the lifespans of the apps it mounts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

REST_PREFIX = "/rest/v1"
STORAGE_PREFIX = "/storage/v1"


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_api_app(rest_app: ASGIApp, extra_mounts: Mapping[str, ASGIApp] | None = None) -> Starlette:
    """`extra_mounts` maps a path prefix to an app, e.g. `{"/functions/v1": functions_app}`."""
    mounts = {REST_PREFIX: rest_app, **(extra_mounts or {})}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for mounted in mounts.values():
                router = getattr(mounted, "router", None)
                if router is not None and hasattr(router, "lifespan_context"):
                    await stack.enter_async_context(router.lifespan_context(mounted))
            yield

    routes = [Route("/health", health, methods=["GET"])]
    routes += [Mount(prefix, app=mounted) for prefix, mounted in mounts.items()]
    return Starlette(routes=routes, lifespan=lifespan)
