"""The API process of `tgcrm up`: one port serving the REST gateway (/rest/v1), auth (/auth/v1), Storage
(/storage/v1), the edge functions (/functions/v1) and the admin page (/admin), configured by the environment
`tgcrm up` gives it.

Prints READY once uvicorn listens, so the supervisor knows when to check its health.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse

from safeguards.proxies import parse_trusted_proxies, uvicorn_proxy_options

log = logging.getLogger("tgcrm.api")


class ApiProcessSettings(BaseSettings):
    """What the API process needs beyond the functions' own settings (FunctionsSettings reads the rest)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, use_attribute_docstrings=True)

    rest_database_url: str = Field(validation_alias=AliasChoices("TGCRM_REST_DATABASE_URL", "rest_database_url"))
    """PostgreSQL URL the REST gateway logs in with (the `authenticator` role)."""
    rest_max_body_bytes: int = Field(
        1024 * 1024, gt=0, validation_alias=AliasChoices("TGCRM_REST_MAX_BODY_BYTES", "rest_max_body_bytes"))
    """Largest body /rest/v1 reads (413 PGRST413 past it); hosted Supabase's gateway allows 1 MB."""
    jwt_secret: str = Field(validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "jwt_secret"))
    """The local project's JWT secret: verifies tokens at /rest/v1 and signs the demo sign-in."""
    storage_dir: Path | None = Field(None, validation_alias=AliasChoices("TGCRM_STORAGE_DIR", "storage_dir"))
    """Where /storage/v1 keeps the bytes of objects (`<state-dir>/storage`); unset: no /storage/v1."""
    storage_max_upload_bytes: int = Field(
        50 * 1024 * 1024, gt=0,
        validation_alias=AliasChoices("STORAGE_MAX_UPLOAD_BYTES", "storage_max_upload_bytes"))
    """The largest object /storage/v1 takes (413-shaped EntityTooLarge past it), as hosted Storage's 50 MiB default."""
    anon_key: str = Field(validation_alias=AliasChoices("SUPABASE_ANON_KEY", "anon_key"))
    """The anon key the admin page calls the API with (and one of the two keys the gateway accepts)."""
    service_role_key: str = Field(validation_alias=AliasChoices("SUPABASE_SERVICE_ROLE_KEY", "service_role_key"))
    """The gateway's other key (supabase_local.gateway)."""
    supabase_url: str = Field(validation_alias=AliasChoices("SUPABASE_URL", "supabase_url"))
    """The API's own address: the issuer of the auth service's tokens."""
    auth_database_url: str = Field(validation_alias=AliasChoices("TGCRM_AUTH_DATABASE_URL", "auth_database_url"))
    """What /auth/v1 logs in to PostgreSQL as (the `supabase_auth_admin` role: the `auth` tables only)."""
    demo_user_id: str | None = Field(None, validation_alias=AliasChoices("TGCRM_LOCAL_DEMO_USER_ID", "demo_user_id"))
    """Local mode: the admin page may sign in as this user without a password (unset in production)."""
    demo_user_email: str | None = Field(
        None, validation_alias=AliasChoices("TGCRM_LOCAL_DEMO_USER_EMAIL", "demo_user_email"))
    """Local mode: the demo user's email, shown by the admin page."""
    local_crm_url: str | None = Field(None, validation_alias=AliasChoices("TGCRM_LOCAL_CRM_URL", "local_crm_url"))
    """Local mode: the crm_server URL the connect form is prefilled with."""
    local_crm_api_key: str | None = Field(
        None, validation_alias=AliasChoices("TGCRM_LOCAL_CRM_API_KEY", "local_crm_api_key"))
    """Local mode: the crm_server key the connect form is prefilled with (the demo organization's)."""
    trusted_proxies: str = Field("", validation_alias=AliasChoices("TGCRM_TRUSTED_PROXIES", "trusted_proxies"))
    """Reverse proxies whose `X-Forwarded-For`/`-Proto` the API process of `tgcrm up` believes: comma-separated IP
    addresses or networks, or `*`; empty: none (the headers are ignored).
    """
    http_header_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=AliasChoices("TGCRM_HTTP_HEADER_TIMEOUT_SECONDS", "http_header_timeout_seconds"))
    """How long a client may take to send a request's head to the API process."""
    http_body_idle_timeout_seconds: float = Field(
        30.0, gt=0,
        validation_alias=AliasChoices("TGCRM_HTTP_BODY_IDLE_TIMEOUT_SECONDS", "http_body_idle_timeout_seconds"))
    """How long a request's body to the API process may pause between two bytes before the connection is closed."""

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        parse_trusted_proxies(value)  # a bad entry stops the process at start, naming it
        return value


def build_app(settings: ApiProcessSettings, host: str, port: int) -> Starlette:
    """`host` and `port` are where it listens: the admin page answers only to that port by a loopback name (or
    `host` itself when it names an address)."""
    from functions._shared.settings import FunctionsSettings
    from functions.host import create_functions_app
    from supabase_local.api import STORAGE_PREFIX, create_api_app
    from supabase_local.auth.app import create_auth_app
    from supabase_local.auth.config import auth_config
    from supabase_local.rest.app import create_rest_app
    from supabase_local.storage import create_storage_app
    from tgcrm.admin.app import AdminSettings, LocalSignIn, create_admin_app
    from tgcrm.admin.host_guard import HostGuard

    functions_settings = FunctionsSettings()  # type: ignore[call-arg]
    local = None
    if settings.demo_user_id:
        local = LocalSignIn(user_id=settings.demo_user_id, email=settings.demo_user_email,
                            jwt_secret=settings.jwt_secret, crm_url=settings.local_crm_url,
                            crm_api_key=settings.local_crm_api_key)
    admin = create_admin_app(AdminSettings(
        anon_key=settings.anon_key, host_guard=HostGuard.for_listen_address(host, port), local_sign_in=local,
        sandbox=bool(functions_settings.crm_sandbox_url and functions_settings.crm_sandbox_api_key)))
    rest = create_rest_app(settings.rest_database_url, settings.jwt_secret, max_body_bytes=settings.rest_max_body_bytes)
    auth = create_auth_app(auth_config(settings.jwt_secret, settings.supabase_url, functions_settings.supabase_config),
                           settings.auth_database_url)
    mounts = {"/functions/v1": create_functions_app(functions_settings), "/admin": admin}
    if settings.storage_dir is not None:
        mounts[STORAGE_PREFIX] = create_storage_app(settings.rest_database_url, settings.jwt_secret,
                                                    settings.storage_dir,
                                                    max_upload_bytes=settings.storage_max_upload_bytes)
    app = create_api_app(rest, extra_mounts=mounts, api_keys=(settings.anon_key, settings.service_role_key),
                         auth_app=auth)

    async def home(request: Request) -> RedirectResponse:
        return RedirectResponse("/admin/", status_code=307)

    app.add_route("/", home, methods=["GET"])
    return app


def serve_api(host: str, port: int, log_level: str) -> int:
    import uvicorn

    from safeguards.http_limits import RequestLimits, uvicorn_options
    from safeguards.logs import configure_logging
    from safeguards.serving import serve_announcing_ready

    configure_logging(log_level)
    try:
        settings = ApiProcessSettings()  # type: ignore[call-arg]
        app = build_app(settings, host, port)
    except ValidationError as exc:
        missing = ", ".join(str(error["loc"][0]) for error in exc.errors())
        print(f"api: missing or invalid settings: {missing}", file=sys.stderr)
        return 2
    limits = RequestLimits(header_timeout_seconds=settings.http_header_timeout_seconds,
                           body_idle_timeout_seconds=settings.http_body_idle_timeout_seconds)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                            log_config=None, **uvicorn_options(limits),
                            **uvicorn_proxy_options(parse_trusted_proxies(settings.trusted_proxies)))
    server = uvicorn.Server(config)

    # uvicorn's own loop choice (uvloop when installed), as `uvicorn.run` would make it: this process is both the
    # HTTP server and, through supabase-py, the HTTP client of its own REST gateway, so the loop is the hot path.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        return runner.run(serve_announcing_ready(server))
