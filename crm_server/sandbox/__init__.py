"""An offline Telegram for tests and for running without credentials, under a real Telethon TelegramClient.
Call `install(SandboxWorld(path))` before creating clients; drive the world with its methods (incoming, flood, ...)."""

from crm_server.sandbox.errors import (
    SandboxError,
    TelethonShapeError,
    UnknownAccount,
    UnknownUser,
    UsernameTaken,
)
from crm_server.sandbox.media import KINDS as MEDIA_KINDS
from crm_server.sandbox.media import SimFile, SimIncomingMedia
from crm_server.sandbox.seam import check_telethon_shape, install, installed_world, uninstall
from crm_server.sandbox.world import LOGIN_CODE, SandboxWorld

__all__ = [
    "LOGIN_CODE",
    "MEDIA_KINDS",
    "SandboxError",
    "SandboxWorld",
    "SimFile",
    "SimIncomingMedia",
    "TelethonShapeError",
    "UnknownAccount",
    "UnknownUser",
    "UsernameTaken",
    "check_telethon_shape",
    "install",
    "installed_world",
    "uninstall",
]
