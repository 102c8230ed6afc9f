"""The environment variables behind the options of `tgcrm up`, `db up`, `db migrate` and `token`: each is the
default of a command-line flag, so a flag given wins (`tgcrm functions` has its own, functions/cli.py).

Read with pydantic like the services' settings, so docs/configuration.md lists them from the same descriptions.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommandLineSettings(BaseSettings):
    """Defaults of the command-line flags; the environment only (no `.env`: that file is the services')."""

    # An empty variable means "not set", as the flags' defaults always read it (`TGCRM_API_PORT=` keeps 54321).
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, use_attribute_docstrings=True,
                                      env_ignore_empty=True)

    host: str = Field("127.0.0.1", validation_alias=AliasChoices("TGCRM_HOST", "host"))
    """Address the services of `tgcrm up` and `db up` listen on (`--host`)."""
    api_port: int = Field(54321, ge=1, le=65535, validation_alias=AliasChoices("TGCRM_API_PORT", "api_port"))
    """Port of the Supabase-compatible API: REST, functions, admin page (`--api-port`)."""
    crm_port: int = Field(8090, ge=1, le=65535, validation_alias=AliasChoices("TGCRM_CRM_PORT", "crm_port"))
    """Port of crm_server under `tgcrm up` (`--crm-port`)."""
    db_port: int = Field(54322, ge=1, le=65535, validation_alias=AliasChoices("TGCRM_DB_PORT", "db_port"))
    """Port of the embedded PostgreSQL (`--db-port`)."""
    state_dir: Path = Field(Path(".local"), validation_alias=AliasChoices("TGCRM_STATE_DIR", "state_dir"))
    """Where data, keys and logs live, relative to the current folder (`--state-dir`)."""
    up_database_url: str | None = Field(
        None, validation_alias=AliasChoices("TGCRM_DATABASE_URL", "up_database_url"))
    """A PostgreSQL `tgcrm up` uses instead of the embedded one (`--database-url`)."""
    database_url: str | None = Field(None, validation_alias=AliasChoices("DATABASE_URL", "database_url"))
    """The PostgreSQL `tgcrm db migrate` migrates and `tgcrm db up` serves instead of the embedded one."""
    jwt_secret: str | None = Field(None, validation_alias=AliasChoices("SUPABASE_JWT_SECRET", "jwt_secret"))
    """The secret `tgcrm token` signs with instead of the state folder's (`<state-dir>/jwt_secret`)."""
    storage_max_upload_bytes: int = Field(
        50 * 1024 * 1024, gt=0,
        validation_alias=AliasChoices("STORAGE_MAX_UPLOAD_BYTES", "storage_max_upload_bytes"))
    """The largest object the /storage/v1 of `tgcrm db up` takes (`tgcrm up`'s API process reads its own)."""
    log_level: str = Field("warning", validation_alias=AliasChoices("TGCRM_LOG_LEVEL", "log_level"))
    """Log level of the services `tgcrm up` runs (`--log-level`)."""


def command_line_settings() -> CommandLineSettings:
    return CommandLineSettings()
