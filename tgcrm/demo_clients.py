"""The seed's demo clients as simulated users of the sandbox Telegram, so that a reply to them is delivered.

`supabase/seed.sql` gives the demo organization two clients; on the sandbox nobody has their phone or username until
`tgcrm up` creates them here. Safe on every start: the sandbox makes, or updates, a simulated user by phone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

# The clients of supabase/seed.sql (its ids; their phone, username and name are read from the database).
DEMO_CLIENT_IDS = ("00000000-0000-4000-8000-0000000000c1", "00000000-0000-4000-8000-0000000000c2")
SANDBOX_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class DemoClient:
    name: str
    phone: str
    username: str | None

    def sandbox_user(self, *, with_username: bool = True) -> dict[str, str]:
        """The body of `POST /sandbox/users`: the client's phone, username and name as Telegram would show them."""
        first_name, _, last_name = self.name.strip().partition(" ")
        body = {"phone": self.phone, "first_name": first_name or self.phone}
        if last_name.strip():
            body["last_name"] = last_name.strip()
        if with_username and self.username:
            body["username"] = self.username
        return body


async def load_demo_clients(database_url: str) -> list[DemoClient]:
    """The seed's clients as the database holds them now (one that was deleted, or has no phone, is left out)."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT name, phone, telegram_username FROM public.clients "
                                "WHERE id = ANY($1::uuid[]) AND phone IS NOT NULL ORDER BY id", list(DEMO_CLIENT_IDS))
    finally:
        await conn.close()
    return [DemoClient(name=row["name"] or "", phone=row["phone"], username=row["telegram_username"]) for row in rows]


async def create_sandbox_users(crm_url: str, admin_key: str, clients: Sequence[DemoClient],
                               transport: httpx.AsyncBaseTransport | None = None) -> list[str]:
    """Make each client a simulated user of the sandbox; returns what went wrong, one sentence per client (the
    stack runs anyway: only replies to that client would fail)."""
    problems: list[str] = []
    async with httpx.AsyncClient(base_url=crm_url, headers={"X-API-Key": admin_key}, transport=transport,
                                 timeout=SANDBOX_TIMEOUT_SECONDS) as http:
        for client in clients:
            try:
                answer = await http.post("/sandbox/users", json=client.sandbox_user())
                if answer.status_code == 422 and _field(answer) == "username":
                    # Someone made another simulated user with this username: the client stays reachable by phone.
                    problems.append(f"the sandbox username @{client.username} of demo client {client.name} belongs "
                                    f"to another simulated user; {client.name} is reachable by phone only")
                    answer = await http.post("/sandbox/users", json=client.sandbox_user(with_username=False))
                if not answer.is_success:
                    problems.append(f"could not make demo client {client.name} a sandbox user: HTTP "
                                    f"{answer.status_code} {answer.text[:200]}")
            except httpx.HTTPError as exc:
                problems.append(f"could not make demo client {client.name} a sandbox user: {type(exc).__name__}: "
                                f"{exc}")
    return problems


def _field(answer: httpx.Response) -> str | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    return body.get("field") if isinstance(body, dict) else None
