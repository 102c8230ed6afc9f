"""Which requests the admin page answers: those addressed to this server by a loopback name (or the address it was
told to listen on) and its own port, and, when they carry an `Origin`, sent from that same origin.

Why (DNS rebinding): a page on evil.example whose name an attacker re-points at 127.0.0.1 reaches our port, and to
the browser it is same-origin with itself, so it may read our answers, such as the local sign-in's JWT and CRM key.
Its requests still say `Host: evil.example` (and `Origin: http://evil.example`): the names are what we check, the
TCP peer cannot tell such a request from the page's own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"localhost"})


class AdminRequestRefused(Exception):
    """Base: a request the admin page refuses, answered as `{"success": false, "error", "code"}` with 403."""

    status_code = 403
    code = "FORBIDDEN"
    default_message = "This request is not allowed"

    def response(self) -> JSONResponse:
        return JSONResponse({"success": False, "error": self.default_message, "code": self.code},
                            status_code=self.status_code, headers={"Cache-Control": "no-store"})


class HostNotAllowedError(AdminRequestRefused):
    """`Host` is not a loopback name with our port (or is missing, repeated or malformed)."""

    code = "HOST_NOT_ALLOWED"
    default_message = "Open the admin page at this computer's loopback address (http://127.0.0.1:<port>/admin/)"


class OriginNotAllowedError(AdminRequestRefused):
    """`Origin` is present and is not the page's own origin (another site, another port, `null`)."""

    code = "ORIGIN_NOT_ALLOWED"
    default_message = "Requests to the admin page must come from the admin page itself"


def _split_host(value: str) -> tuple[str, int] | None:
    """`name[:port]` or `[v6][:port]` as (lowercased name, port; 80 when absent), or None when malformed."""
    value = value.strip().lower()
    if not value or any(char in value for char in "/\\@?# \t"):
        return None
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else ""
        name = f"[{name}]"
    else:
        name, colon, port_text = value.partition(":")
        if colon and not port_text:
            return None
    if port_text and not (port_text.isdigit() and len(port_text) <= 5):
        return None
    return name, int(port_text) if port_text else 80


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
    except ValueError:
        return False
    # A bare IPv6 address is not a valid Host (it needs brackets); 127.0.0.0/8 and ::1.
    return address.is_loopback and (address.version == 4 or name.startswith("["))


@dataclass(frozen=True)
class HostGuard:
    """The admin page's own addresses: loopback names on `port`, and `listen_hosts` (what `--host` named when it
    is a concrete address: the printed ADMIN_URL uses it)."""

    port: int
    listen_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def for_listen_address(cls, host: str, port: int) -> HostGuard:
        wildcard = host in ("", "0.0.0.0", "::")
        name = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return cls(port=port, listen_hosts=frozenset() if wildcard else frozenset({name.lower()}))

    def check(self, hosts: list[str], origins: list[str]) -> None:
        """Raises HostNotAllowedError or OriginNotAllowedError; `hosts` and `origins` are the header values."""
        if len(hosts) != 1:
            raise HostNotAllowedError()
        own = _split_host(hosts[0])
        if own is None or own[1] != self.port or not (_is_loopback(own[0]) or own[0] in self.listen_hosts):
            raise HostNotAllowedError()
        if not origins:
            return  # e.g. a navigation or a same-origin GET: the Host check above is what protects it
        if len(origins) != 1:
            raise OriginNotAllowedError()
        # Only the page's own origin: a same-origin fetch always sends it as the Host it was loaded from.
        origin = urlsplit(origins[0].strip())
        if origin.scheme != "http" or origin.path or origin.query or origin.fragment or origin.username:
            raise OriginNotAllowedError()
        if _split_host(origin.netloc) != own:
            raise OriginNotAllowedError()


class HostGuardMiddleware:
    """Applies a HostGuard to every HTTP request of the app it wraps (the page, its config, its static files and the
    local sign-in alike)."""

    def __init__(self, app: ASGIApp, guard: HostGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hosts, origins = [], []
        for name, value in scope["headers"]:
            if name == b"host":
                hosts.append(value.decode("latin-1"))
            elif name == b"origin":
                origins.append(value.decode("latin-1"))
        try:
            self.guard.check(hosts, origins)
        except AdminRequestRefused as refused:
            await refused.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
