"""The local Supabase API host: one port serving `/rest/v1`, `/auth/v1`, further apps such as `/storage/v1` and
`/functions/v1`, and `/health`; the gated prefixes (supabase_local.gateway) answer only requests with the project's
`apikey`.

Starlette does not run a mounted app's lifespan, so this app runs the lifespans of the apps it mounts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from supabase_local.gateway import GATED_PREFIXES, require_api_key

REST_PREFIX = "/rest/v1"
AUTH_PREFIX = "/auth/v1"
STORAGE_PREFIX = "/storage/v1"


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_api_app(rest_app: ASGIApp, extra_mounts: Mapping[str, ASGIApp] | None = None, *,
                   api_keys: Iterable[str], auth_app: ASGIApp | None = None) -> Starlette:
    """`extra_mounts` maps a path prefix to an app, e.g. `{"/functions/v1": functions_app}`; `api_keys` are the
    project's anon and service_role keys, required on every prefix in GATED_PREFIXES (e.g. a `/storage/v1` mount)."""
    keys = list(api_keys)
    mounts = {REST_PREFIX: rest_app, **({AUTH_PREFIX: auth_app} if auth_app is not None else {}),
              **(extra_mounts or {})}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for mounted in mounts.values():
                router = getattr(mounted, "router", None)
                if router is not None and hasattr(router, "lifespan_context"):
                    await stack.enter_async_context(router.lifespan_context(mounted))
            yield

    routes: list[Route | Mount] = [Route("/health", health, methods=["GET"])]
    routes += [Mount(prefix, app=require_api_key(mounted, keys, prefix) if prefix in GATED_PREFIXES else mounted)
               for prefix, mounted in mounts.items()]
    return Starlette(routes=routes, lifespan=lifespan)
