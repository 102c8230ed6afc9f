"""The sandbox's exceptions, in one place.
Public errors are raised to callers of `SandboxWorld`; `RpcFailure` is what a handler answers Telegram-style."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class for everything the sandbox raises at its callers (routes, tests)."""


class UnknownAccount(SandboxError):
    """The phone is not an account of the world: it never logged in and was never pre-created."""


class UnknownUser(SandboxError):
    """No simulated user matches the given phone, @username or id."""


class UsernameTaken(SandboxError):
    """Another simulated user already has this username."""


class IncomingItemError(SandboxError):
    """One message of a bulk injection was refused (nothing of the bulk was written): `index` in the list and the
    refusal itself (`UnknownUser`, or a SandboxError about its text or file)."""

    def __init__(self, index: int, error: SandboxError) -> None:
        super().__init__(f"message {index}: {error}")
        self.index = index
        self.error = error


class TelethonShapeError(SandboxError):
    """Telethon no longer looks the way the seam expects; the sandbox would break silently, so fail loudly."""


class RpcFailure(Exception):
    """An RPC error answered instead of a result, e.g. `RpcFailure(420, "FLOOD_WAIT_30")`.

    The sender turns it into Telethon's own exception class via `rpc_message_to_error`, so callers
    see exactly what a real Telegram error would raise (`FloodWaitError`, `PhoneCodeInvalidError`, ...).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
