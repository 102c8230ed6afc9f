"""Encryption at rest for what the store keeps secret: sessions and webhook secrets.

Fernet (AES-128-CBC + HMAC-SHA256) with the key from CRM_SESSION_KEY or `<state_dir>/crm_session.key`.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class SecretCipher:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            # Never include the token: it is the secret, only encrypted.
            raise ValueError("stored secret cannot be decrypted with this CRM_SESSION_KEY") from None
