"""Which addresses crm_server connects out to (webhook URLs, and the files `/telegram/send` fetches): http(s) only,
and no private, loopback or link-local targets.

Refusing internal addresses keeps the delivery worker from being used to reach services behind the firewall. The
check runs at registration and again at every delivery run, against the address the post then connects to (pinned:
a name that resolved to a public address at registration cannot re-resolve to 127.0.0.1 afterwards, DNS rebinding).
CRM_PRIVATE_WEBHOOK_HOSTS lets named host:port pairs through (the local stack's own API); CRM_ALLOW_PRIVATE_WEBHOOKS
lets everything through (tests and development only).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from crm_server.errors import ValidationError

FIELD = "webhook_url"
# How long a checked address is reused for a host: one resolution per host per half minute, not per post.
RESOLVED_SECONDS = 30.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class WebhookPolicy:
    # Any address at all (tests and development): nothing is checked or pinned.
    allow_private: bool = False
    # (host, port) pairs allowed although private: the local stack's API on 127.0.0.1.
    private_hosts: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def from_setting(cls, allow_private: bool, private_hosts: str) -> WebhookPolicy:
        pairs = set()
        for item in filter(None, (part.strip() for part in private_hosts.split(","))):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"CRM_PRIVATE_WEBHOOK_HOSTS wants host:port items, got {item!r}")
            pairs.add((host.strip("[]").lower(), int(port)))
        return cls(allow_private=allow_private, private_hosts=frozenset(pairs))


@dataclass(frozen=True)
class DeliveryTarget:
    """Where a post really goes: the URL with the checked address as its host, the Host header, the TLS name."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


class WebhookAddressRefused(Exception):
    """The webhook's host resolves (now) to an address the policy refuses."""


def _is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _parse(url: str) -> tuple[SplitResult, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValidationError("The webhook URL is malformed", field=FIELD) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValidationError("The webhook URL must be http:// or https://", field=FIELD)
    if not parts.hostname:
        raise ValidationError("The webhook URL has no host", field=FIELD)
    return parts, parts.hostname, port or (443 if scheme == "https" else 80)


async def _resolve(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=5.0)
    except (OSError, asyncio.TimeoutError, UnicodeError):
        raise ValidationError("The webhook host does not resolve", field=FIELD) from None
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


Resolver = Callable[[str, int], Awaitable[list[Address]]]


async def _allowed_address(host: str, port: int, policy: WebhookPolicy, resolve: Resolver = _resolve) -> Address:
    """The address to connect to; ValidationError when none may be used."""
    named = (host.lower(), port) in policy.private_hosts
    if not named and (host == "localhost" or host.endswith(".localhost")):
        raise ValidationError("Webhooks to localhost are not allowed", field=FIELD)
    addresses = await resolve(host, port)
    if not addresses or not (named or all(_is_public(address) for address in addresses)):
        raise ValidationError("Webhooks to private, loopback or link-local addresses are not allowed", field=FIELD)
    return addresses[0]


async def validate_webhook_url(url: str, policy: WebhookPolicy) -> str:
    """The URL if acceptable at registration, else ValidationError naming `webhook_url`."""
    _, host, port = _parse(url)
    if not policy.allow_private:
        await _allowed_address(host, port, policy)
    return url


class DeliveryTargets:
    """The checked, pinned target of each webhook URL, re-checked every RESOLVED_SECONDS."""

    def __init__(self, policy: WebhookPolicy, resolve: Resolver = _resolve) -> None:
        self._policy = policy
        self._resolve = resolve  # the system's resolver; a test stands a rebinding DNS in for it
        self._checked: dict[str, tuple[DeliveryTarget, float]] = {}

    async def target(self, url: str) -> DeliveryTarget:
        """WebhookAddressRefused when the URL's host now resolves where webhooks may not go."""
        if self._policy.allow_private:
            return DeliveryTarget(url)
        cached = self._checked.get(url)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            parts, host, port = _parse(url)
            address = await _allowed_address(host, port, self._policy, self._resolve)
        except ValidationError as exc:
            raise WebhookAddressRefused(exc.message) from None
        target = _pinned(parts, host, port, address)
        if len(self._checked) > 10_000:
            self._checked.clear()  # bounded: registrations are far fewer
        self._checked[url] = (target, now + RESOLVED_SECONDS)
        return target


def _pinned(parts: SplitResult, host: str, port: int, address: Address) -> DeliveryTarget:
    try:
        ipaddress.ip_address(host)
        return DeliveryTarget(parts.geturl())  # a literal address needs no pinning
    except ValueError:
        pass
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    url = parts._replace(netloc=netloc).geturl()
    host_header = f"{host}:{parts.port}" if parts.port else host
    # httpx verifies the certificate against sni_hostname: TLS still checks the name, only DNS is skipped.
    extensions = {"sni_hostname": host} if parts.scheme.lower() == "https" else {}
    return DeliveryTarget(url, headers={"host": host_header}, extensions=extensions)
