"""The auth service's settings: the project's JWT secret and issuer, and the `[auth]` options of
supabase/config.toml that the Supabase CLI reads too (`enable_signup`, `jwt_expiry`, `minimum_password_length`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# GoTrue's defaults, as `supabase init` writes them into config.toml.
DEFAULT_JWT_EXPIRY = 3600
DEFAULT_MINIMUM_PASSWORD_LENGTH = 6


@dataclass(frozen=True)
class AuthConfig:
    jwt_secret: str
    issuer: str  # `<SUPABASE_URL>/auth/v1`, as GoTrue's `iss`
    jwt_expiry: int = DEFAULT_JWT_EXPIRY
    # Off unless config.toml enables it: the CRM's users belong to organizations, and a self-made account
    # would have none (hosted projects decide this in their dashboard).
    signup_enabled: bool = False
    minimum_password_length: int = DEFAULT_MINIMUM_PASSWORD_LENGTH


def auth_config(jwt_secret: str, api_url: str, config_toml: Path | None = None) -> AuthConfig:
    """The settings for the API served at `api_url`, with `[auth]` of `config_toml` when that file exists."""
    section: dict[str, Any] = {}
    if config_toml is not None and config_toml.exists():
        section = tomllib.loads(config_toml.read_text()).get("auth", {})
    return AuthConfig(
        jwt_secret=jwt_secret,
        issuer=f"{api_url.rstrip('/')}/auth/v1",
        jwt_expiry=int(section.get("jwt_expiry", DEFAULT_JWT_EXPIRY)),
        signup_enabled=bool(section.get("enable_signup", False)),
        minimum_password_length=int(section.get("minimum_password_length", DEFAULT_MINIMUM_PASSWORD_LENGTH)),
    )
