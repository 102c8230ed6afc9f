"""Which webhook URLs crm_server accepts: http(s) only, and no private, loopback or link-local targets.

Refusing internal addresses keeps the delivery worker from being used to reach services behind the firewall;
CRM_ALLOW_PRIVATE_WEBHOOKS turns it off for the local stack, where the receiver is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from crm_server.errors import ValidationError

FIELD = "webhook_url"


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=5.0)
    except (OSError, asyncio.TimeoutError, UnicodeError):
        raise ValidationError("The webhook host does not resolve", field=FIELD) from None
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


async def validate_webhook_url(url: str, *, allow_private: bool) -> str:
    """The URL if acceptable, else ValidationError naming `webhook_url`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError("The webhook URL is malformed", field=FIELD) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError("The webhook URL must be http:// or https://", field=FIELD)
    host = parts.hostname
    if not host:
        raise ValidationError("The webhook URL has no host", field=FIELD)
    if allow_private:
        return url
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            raise ValidationError("Webhooks to localhost are not allowed", field=FIELD) from None
        addresses = await _resolve(host, port or (443 if parts.scheme.lower() == "https" else 80))
    if not addresses or not all(_is_public(address) for address in addresses):
        raise ValidationError(
            "Webhooks to private, loopback or link-local addresses are not allowed", field=FIELD
        )
    return url
