"""A user of `auth.users` as the auth service reads it, and the user object GoTrue answers with.

Only the service's own code builds one (from a row); the JSON is what supabase-py's `User` model parses.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

USER_COLUMNS = ("id, aud, role, email, phone, encrypted_password, email_confirmed_at, last_sign_in_at, "
                "raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_anonymous")
# A user row without these (inserted by hand or by an old seed) still signs in as hosted Supabase's users do.
DEFAULT_AUDIENCE = "authenticated"
DEFAULT_APP_METADATA: dict[str, Any] = {"provider": "email", "providers": ["email"]}


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    aud: str
    role: str
    email: str | None
    phone: str | None
    encrypted_password: str | None
    email_confirmed_at: datetime | None
    last_sign_in_at: datetime | None
    app_metadata: dict[str, Any]
    user_metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    is_anonymous: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> User:
        return cls(
            id=row["id"], aud=row["aud"] or DEFAULT_AUDIENCE, role=row["role"] or DEFAULT_AUDIENCE,
            email=row["email"], phone=row["phone"], encrypted_password=row["encrypted_password"],
            email_confirmed_at=row["email_confirmed_at"], last_sign_in_at=row["last_sign_in_at"],
            app_metadata=dict(row["raw_app_meta_data"] or DEFAULT_APP_METADATA),
            user_metadata=dict(row["raw_user_meta_data"] or {}), created_at=row["created_at"],
            updated_at=row["updated_at"], is_anonymous=bool(row["is_anonymous"]))

    def to_json(self) -> dict[str, Any]:
        """GoTrue's user object; never the password hash."""
        return {
            "id": str(self.id),
            "aud": self.aud,
            "role": self.role,
            "email": self.email or "",
            "email_confirmed_at": _iso(self.email_confirmed_at),
            "phone": self.phone or "",
            "confirmed_at": _iso(self.email_confirmed_at),
            "last_sign_in_at": _iso(self.last_sign_in_at),
            "app_metadata": self.app_metadata,
            "user_metadata": self.user_metadata,
            "identities": [],
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "is_anonymous": self.is_anonymous,
        }


def merged_metadata(current: Mapping[str, Any], changes: Mapping[str, Any] | None) -> dict[str, Any]:
    """GoTrue's metadata update: top-level keys are set, a key set to null is removed."""
    merged = dict(current)
    for key, value in (changes or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
