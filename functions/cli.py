"""`tgcrm functions` (and `python -m functions`): the functions host alone, configured by the environment.

Serves `/functions/v1/<name>` and `/health` under uvicorn; the full stack (`tgcrm up`) mounts the same app instead.
"""

from __future__ import annotations

import argparse
import asyncio

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FunctionsCommandSettings(BaseSettings):
    """The environment behind `tgcrm functions`' flags (a flag given wins); the host's own settings are
    FunctionsSettings."""

    # An empty variable means "not set", as the flags' defaults always read it (`TGCRM_API_PORT=` keeps 54321).
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, use_attribute_docstrings=True,
                                      env_ignore_empty=True)

    host: str = Field("127.0.0.1", validation_alias=AliasChoices("TGCRM_HOST", "host"))
    """Address `tgcrm functions` listens on (`--host`)."""
    port: int = Field(54331, ge=1, le=65535, validation_alias=AliasChoices("TGCRM_FUNCTIONS_PORT", "port"))
    """Port of `tgcrm functions` (`--port`)."""
    log_level: str = Field("info", validation_alias=AliasChoices("FUNCTIONS_LOG_LEVEL", "log_level"))
    """Log level of `tgcrm functions` (`--log-level`)."""


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "functions", help="run the edge functions host alone",
        description="Serve the edge functions at /functions/v1/<name>. Reads SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY, "
                    "SUPABASE_JWT_SECRET (or SUPABASE_JWKS_URL), FUNCTIONS_SETTINGS_KEY (a Fernet key sealing "
                    "integration secrets), FUNCTIONS_PUBLIC_URL, WAPPI_BASE_URL, FUNCTIONS_CRM_HOSTS (the only "
                    "crm_server hosts reached, host[:port],...), CRM_ALLOW_HTTP_LOOPBACK (local stack: crm_server "
                    "on loopback only) from the environment or .env.")
    defaults = FunctionsCommandSettings()
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--log-level", default=defaults.log_level)
    parser.set_defaults(handler=run_functions)


def run_functions(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from functions._shared.settings import FunctionsSettings
    from functions.host import create_standalone_app
    from safeguards.http_limits import RequestLimits, uvicorn_options
    from safeguards.proxies import parse_trusted_proxies, uvicorn_proxy_options
    from safeguards.logs import configure_logging
    from safeguards.serving import serve_announcing_ready

    configure_logging(args.log_level, fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = FunctionsSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        missing = ", ".join(str(error["loc"][0]).upper() for error in exc.errors())
        print(f"functions: missing or invalid settings: {missing}")
        return 2
    if settings.functions_public_url is None:
        # Standalone, the webhook URL crm_server is given must point here, not at SUPABASE_URL.
        settings = settings.model_copy(update={"functions_public_url": f"http://{args.host}:{args.port}"})
    print(f"FUNCTIONS_URL=http://{args.host}:{args.port}/functions/v1", flush=True)
    server = uvicorn.Server(uvicorn.Config(
        create_standalone_app(settings), host=args.host, port=args.port, log_level=args.log_level.lower(),
        **uvicorn_options(RequestLimits()), **uvicorn_proxy_options(parse_trusted_proxies(settings.trusted_proxies))))
    return asyncio.run(serve_announcing_ready(server))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_commands(subparsers)
    arguments = list(argv or [])
    if not arguments or arguments[0] != "functions":
        arguments.insert(0, "functions")
    args = parser.parse_args(arguments)
    return int(args.handler(args))
