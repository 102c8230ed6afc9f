"""The functions host: one Starlette app serving every edge function at `/<name>` (mounted at `/functions/v1`),
assembled from one Route per function and the exception handlers that turn errors into the contract's JSON.

Does what Supabase's edge gateway does around a function: CORS preflight, method check, request size limit and
`verify_jwt` from supabase/config.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from functions import (
    telegram_crm_auth,
    telegram_crm_connect,
    telegram_crm_mark_read,
    telegram_crm_sandbox,
    telegram_crm_send,
    telegram_crm_status,
    telegram_crm_webhook,
    telegram_integration_remove,
    telegram_integration_save,
    telegram_providers,
    telegram_send,
)
from api_docs.swagger_page import DocsPage
from functions._shared.auth import bearer_token
from functions._shared.checked_transport import Resolver, resolve_with_system
from functions._shared.errors import (
    FunctionError,
    FunctionNotFoundError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    error_response,
)
from functions._shared.runtime import FunctionsRuntime
from functions._shared.settings import FunctionsSettings
from functions.metrics import FunctionsMetrics, MetricsEndpoint
from functions.openapi import build_openapi
from safeguards.request_body import BodyTooLarge, with_body_read

log = logging.getLogger("functions.host")

Handler = Callable[[Request], Awaitable[Response]]
CORS_ALLOW_HEADERS = ("authorization, x-client-info, apikey, content-type, idempotency-key, x-lovable-secret, "
                      "webhook-id, webhook-timestamp, webhook-signature")
# The methods a route takes to the gateway, which answers a function's other ones with the contract's 405 (Starlette's
# own check would answer HEAD for a GET function, and its 405 is plain text). Anything else is Starlette's plain 405.
ROUTED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


@dataclass(frozen=True)
class EdgeFunction:
    name: str
    handler: Handler
    methods: tuple[str, ...]
    # Used when supabase/config.toml does not list the function (Supabase's own default is to verify).
    verify_jwt: bool = True


FUNCTIONS: tuple[EdgeFunction, ...] = (
    EdgeFunction("telegram-crm-connect", telegram_crm_connect.handler, ("POST",)),
    EdgeFunction("telegram-crm-send", telegram_crm_send.handler, ("POST",)),
    EdgeFunction("telegram-crm-webhook", telegram_crm_webhook.handler, ("POST",)),
    EdgeFunction("telegram-send", telegram_send.handler, ("POST",)),
    # Static form metadata without secrets: the admin page may load it before anyone signs in.
    EdgeFunction("telegram-providers", telegram_providers.handler, ("GET",), verify_jwt=False),
    # The admin page's operations that need an integration's secrets (crm_server key, sandbox admin key).
    EdgeFunction("telegram-crm-auth", telegram_crm_auth.handler, ("POST",)),
    EdgeFunction("telegram-crm-status", telegram_crm_status.handler, ("GET", "POST")),
    EdgeFunction("telegram-crm-mark-read", telegram_crm_mark_read.handler, ("POST",)),
    EdgeFunction("telegram-crm-sandbox", telegram_crm_sandbox.handler, ("POST",)),
    EdgeFunction("telegram-integration-save", telegram_integration_save.handler, ("POST",)),
    EdgeFunction("telegram-integration-remove", telegram_integration_remove.handler, ("POST",)),
)


def read_verify_jwt(config_path: Path) -> dict[str, bool]:
    """`[functions.<name>] verify_jwt` from supabase/config.toml (functions not listed keep their own default)."""
    try:
        config = tomllib.loads(config_path.read_text())
    except FileNotFoundError:
        log.warning("%s not found: every function requires a user JWT", config_path)
        return {}
    functions = config.get("functions", {})
    return {name: bool(section.get("verify_jwt", True)) for name, section in functions.items()
            if isinstance(section, dict)}


class RuntimeHolder:
    """The process's runtime: started by the lifespan, or on first use when a parent app mounts this one without
    running its lifespan (Starlette does not run mounted apps' lifespans)."""

    def __init__(self, settings: FunctionsSettings, crm_resolver: Resolver = resolve_with_system) -> None:
        self._settings = settings
        self._crm_resolver = crm_resolver
        self._runtime: FunctionsRuntime | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> FunctionsRuntime:
        if self._runtime is None:
            async with self._lock:
                if self._runtime is None:
                    self._runtime = await FunctionsRuntime.start(self._settings, crm_resolver=self._crm_resolver)
        return self._runtime

    async def close(self) -> None:
        if self._runtime is not None:
            runtime, self._runtime = self._runtime, None
            await runtime.aclose()


def create_functions_app(settings: FunctionsSettings, *,
                         crm_resolver: Resolver = resolve_with_system) -> Starlette:
    """The functions as one ASGI app with routes `/<name>`; mount it at `/functions/v1`. `crm_resolver` is a test
    seam (see FunctionsRuntime.start)."""
    verify_jwt = read_verify_jwt(settings.supabase_config)
    if settings.settings_key is None:
        # Hosts configured before sealing existed keep starting; they say once what they are doing instead.
        log.warning("FUNCTIONS_SETTINGS_KEY is not set: integration secrets (crmApiKey, secret, apiToken) are stored "
                    "in clear in messenger_integrations.settings; set it to a Fernet key to seal them")
    holder = RuntimeHolder(settings, crm_resolver)
    metrics = FunctionsMetrics(function.name for function in FUNCTIONS)
    gateway = EdgeGateway(holder, verify_jwt, settings.max_request_bytes, settings.cors_allow_origin, metrics)
    # Without a key there is no endpoint: `/metrics` is then a name like any other (404 FUNCTION_NOT_FOUND).
    metrics_routes = ([] if settings.metrics_key is None else
                      [Route("/metrics", MetricsEndpoint(metrics, settings.metrics_key.get_secret_value()).endpoint,
                             methods=["GET"])])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await holder.get()
        try:
            yield
        finally:
            await holder.close()

    description = FunctionsDescription({function.name: function.methods for function in FUNCTIONS},
                                       {function.name: verify_jwt.get(function.name, function.verify_jwt)
                                        for function in FUNCTIONS})
    app = Starlette(
        routes=[
            *(gateway.route(function) for function in FUNCTIONS),
            # Public, as Supabase's function URLs are: the description holds no secret, the functions keep theirs.
            Route("/openapi.json", description.endpoint, methods=["GET"]),
            *DocsPage(title="telegram-crm functions").routes("/docs"),
            *metrics_routes,
            # Any other name is the contract's 404 (a deeper path stays Starlette's own plain 404).
            Route("/{name}", gateway.no_such_function, methods=ROUTED_METHODS),
        ],
        lifespan=lifespan,
        exception_handlers={
            FunctionError: gateway.function_error,
            Exception: gateway.unexpected_error,
        },
    )
    app.state.runtime_holder = holder
    app.state.metrics = metrics
    return app


class FunctionsDescription:
    """`/openapi.json`: built once per address it is asked at (its `servers` entry is that address, which behind a
    trusted proxy, FUNCTIONS_TRUSTED_PROXIES, has the proxy's scheme)."""

    def __init__(self, methods: Mapping[str, tuple[str, ...]], verify_jwt: Mapping[str, bool]) -> None:
        self._methods = dict(methods)
        self._verify_jwt = dict(verify_jwt)
        self._built: dict[str, bytes] = {}

    async def endpoint(self, request: Request) -> Response:
        # Mounted at /functions/v1: the mount's path is in root_path (base_url has only the server's own).
        server_url = f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}".rstrip("/")
        if server_url not in self._built:
            if len(self._built) >= 16:  # the Host header is the caller's: keep a few, not one per name tried
                self._built.clear()
            self._built[server_url] = json.dumps(build_openapi(self._methods, self._verify_jwt, server_url)).encode()
        return Response(self._built[server_url], media_type="application/json",
                        headers={"Access-Control-Allow-Origin": "*"})


class EdgeGateway:
    """What runs around every function, and the answers of the exception handlers: every answer carries the CORS
    headers and is logged and counted (functions/metrics.py) once, with the function's name and how long it took."""

    def __init__(self, holder: RuntimeHolder, verify_jwt: Mapping[str, bool], max_request_bytes: int,
                 cors_allow_origin: str, metrics: FunctionsMetrics) -> None:
        self._holder = holder
        self._metrics = metrics
        self._verify_jwt = verify_jwt
        self._max_request_bytes = max_request_bytes
        self._cors = {"Access-Control-Allow-Origin": cors_allow_origin,
                      "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS}

    def route(self, function: EdgeFunction) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                with self._metrics.counting_upstream_errors():
                    response = await self._serve(request, function)
                return self._answered(request, response)
            except FunctionError:
                raise  # the exception handler answers it
            except Exception as exc:
                # Answered here, not by an `Exception` handler: Starlette re-raises after those, and the server
                # would log the traceback a second time.
                return await self.unexpected_error(request, exc)

        return Route(f"/{function.name}", endpoint, methods=ROUTED_METHODS, name=function.name)

    async def _serve(self, request: Request, function: EdgeFunction) -> Response:
        self._arrived(request, function.name)
        allowed = ", ".join((*function.methods, "OPTIONS"))
        if request.method == "OPTIONS":
            return PlainTextResponse("ok", headers={"Access-Control-Allow-Methods": allowed})
        if request.method not in function.methods:
            raise MethodNotAllowedError(headers={"Allow": allowed})
        try:
            request = await with_body_read(request, self._max_request_bytes)
        except BodyTooLarge as exc:
            raise PayloadTooLargeError(str(exc)) from None
        runtime = await self._holder.get()
        request.scope["functions_runtime"] = runtime
        if self._verify_jwt.get(function.name, function.verify_jwt):
            claims = await runtime.verifier.verify(bearer_token(request))
            request.scope.setdefault("state", {})["jwt_claims"] = claims
        return await function.handler(request)

    async def no_such_function(self, request: Request) -> Response:
        name = request.path_params["name"]
        self._arrived(request, name)
        raise FunctionNotFoundError(f"No function named {name}")

    async def function_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FunctionError)
        return self._answered(request, error_response(exc))

    async def unexpected_error(self, request: Request, exc: Exception) -> Response:
        # The one place an unexpected error becomes a JSON 500, logged once.
        log.error("function %s failed", self._arrival(request)[0], exc_info=exc)
        return self._answered(request, error_response(FunctionError()))

    @staticmethod
    def _arrived(request: Request, name: str) -> None:
        request.scope["functions_arrival"] = (name, time.monotonic())

    @staticmethod
    def _arrival(request: Request) -> tuple[str, float]:
        return request.scope.get("functions_arrival", (request.url.path, time.monotonic()))

    def _answered(self, request: Request, response: Response) -> Response:
        response.headers.update(self._cors)
        name, started = self._arrival(request)
        seconds = time.monotonic() - started
        log.info("%s %s -> %d (%.0f ms)", request.method, name, response.status_code, seconds * 1000)
        self._metrics.observe_request(name, request.method, response.status_code, seconds)
        return response


def create_standalone_app(settings: FunctionsSettings, *,
                          crm_resolver: Resolver = resolve_with_system) -> Starlette:
    """The functions alone, at `/functions/v1/<name>` (what `tgcrm functions` serves); runs the functions' lifespan."""
    functions_app = create_functions_app(settings, crm_resolver=crm_resolver)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with functions_app.router.lifespan_context(functions_app):
            yield

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/health", health), Mount("/functions/v1", app=functions_app)], lifespan=lifespan)

