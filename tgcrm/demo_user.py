"""The demo user's password: generated on the first `tgcrm up`, kept in `<state-dir>/demo_user_password` (0600),
and set as the bcrypt hash of `auth.users` so the admin page and supabase-py sign in with email and password.

A password that no longer matches the database (say, after the database was replaced) is set again on start.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import asyncpg

from safeguards.private_files import create_private_file
from supabase_local.auth.passwords import hash_password, verify_password

PASSWORD_FILE = "demo_user_password"


def load_or_create_password(state_dir: Path) -> str:
    path = state_dir / PASSWORD_FILE
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    if not create_private_file(path, password.encode()):  # another process made it first
        return path.read_text().strip()
    return password


async def ensure_demo_password(database_url: str, user_id: str, password: str) -> None:
    """Sets the password (and confirms the email, as the seed does) unless the stored hash already matches it."""
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT encrypted_password FROM auth.users WHERE id = $1", user_id)
        if stored is not None and await verify_password(password, stored):
            return
        await conn.execute(
            "UPDATE auth.users SET encrypted_password = $2, email_confirmed_at = coalesce(email_confirmed_at, now()),"
            " updated_at = now() WHERE id = $1", user_id, await hash_password(password))
    finally:
        await conn.close()
