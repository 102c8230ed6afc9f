"""Integration secrets sealed at rest: which keys of `messenger_integrations.settings` are secrets, and their Fernet
encryption with FUNCTIONS_SETTINGS_KEY on the way into the database and decryption on the way out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from functions._shared.errors import SettingsKeyError

# The values a leaked database dump must not hand over: crm_server's API key, the webhook secret, Wappi's token.
# The other keys (URLs, phone numbers, profile ids) stay readable, so an operator can still tell rows apart.
SECRET_KEYS: frozenset[str] = frozenset({"crmApiKey", "secret", "apiToken"})
# `v1`: Fernet under one key. A later scheme (another cipher, key ids for rotation) gets its own prefix.
SEALED_PREFIX = "fernet:v1:"


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


class SettingsSealer:
    """Seals the secret values of an integration's settings and opens them again.

    Migration path: rows written before sealing existed, or by the original TypeScript functions, hold their secrets
    in clear. `open` passes plain values through unchanged, so those integrations keep working as they are; the next
    save of such an integration (connect again, or save it in the admin page) stores its secrets sealed. Nothing has
    to be rewritten up front.

    Without a key (FUNCTIONS_SETTINGS_KEY unset) sealing is off: `seal` stores values as given, and a sealed value
    read back is a `SettingsKeyError`, exactly like one sealed under another key.
    """

    def __init__(self, key: str | bytes | None) -> None:
        # Fernet raises ValueError for a malformed key: at start, never at the first request.
        self._fernet = Fernet(key) if key else None

    @property
    def seals(self) -> bool:
        return self._fernet is not None

    def seal(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """`settings` with each secret value replaced by `fernet:v1:<token>`; an already sealed value is kept as it
        is (sealing is idempotent), after checking that this key can open it."""
        sealed = dict(settings)
        if self._fernet is None:
            return sealed
        for name in SECRET_KEYS & sealed.keys():
            value = sealed[name]
            if is_sealed(value):
                # Storing a value nobody here can open would only move the failure to the next read.
                self._decrypt(value)
            elif isinstance(value, str) and value:
                sealed[name] = SEALED_PREFIX + self._fernet.encrypt(value.encode()).decode()
        return sealed

    def open(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """`settings` with each sealed secret decrypted; plain values (rows from before sealing) pass through."""
        opened = dict(settings)
        for name in SECRET_KEYS & opened.keys():
            value = opened[name]
            if is_sealed(value):
                opened[name] = self._decrypt(value)
        return opened

    def _decrypt(self, value: str) -> str:
        if self._fernet is None:
            raise SettingsKeyError("An integration's secrets are sealed, but FUNCTIONS_SETTINGS_KEY is not set")
        try:
            return self._fernet.decrypt(value.removeprefix(SEALED_PREFIX).encode()).decode()
        except InvalidToken:
            # Neither the token nor the key goes into the message or the traceback.
            raise SettingsKeyError() from None
