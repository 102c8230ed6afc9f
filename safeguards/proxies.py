"""Which peers may tell a server the client's address and scheme (`X-Forwarded-For`, `X-Forwarded-Proto`): only the
reverse proxies a setting names (CRM_, FUNCTIONS_, TGCRM_TRUSTED_PROXIES), none by default.

uvicorn on its own trusts these headers from 127.0.0.1 (or whatever FORWARDED_ALLOW_IPS says): a proxy on the same
machine that forgot to set them would make every caller look local, so nothing is trusted unless it is configured.
"""

from __future__ import annotations

import ipaddress
from typing import Any

ANY_PEER = "*"


def parse_trusted_proxies(value: str | None) -> tuple[str, ...]:
    """Comma-separated addresses or networks (`10.0.0.5`, `10.0.0.0/8`, `::1`), or `*` for any peer."""
    entries = tuple(entry.strip() for entry in (value or "").split(",") if entry.strip())
    for entry in entries:
        if entry == ANY_PEER:
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            # Host names are refused: trust is decided on the connecting peer's address, never on a lookup.
            raise ValueError(f"{entry!r} is not an IP address or network (or '*')") from None
    return entries


def uvicorn_proxy_options(trusted: tuple[str, ...]) -> dict[str, Any]:
    """`uvicorn.Config` keywords: proxy headers honoured from `trusted` peers only, and ignored when none is."""
    if not trusted:
        return {"proxy_headers": False, "forwarded_allow_ips": []}
    return {"proxy_headers": True, "forwarded_allow_ips": list(trusted)}
