"""The HTTP transport of every call to crm_server: the URL is checked before anything is sent, the host name is
resolved once, every address it resolves to is checked, and the connection is made to a checked address.

What was checked is what is reached: there is no second lookup for a rebinding DNS server to answer differently.
The request is not rewritten, so the Host header, TLS's SNI and the certificate check still use the URL's name.
This goes through httpcore's public network-backend interface (httpcore's "custom network backends", meant for
"non-standard DNS requirements"). httpx has no public way to hand its transport a network backend yet (encode/httpx
PR 3749 proposes one), so `CheckedTransport` replaces the transport's connection pool: the one private attribute
of httpx we touch, checked when the transport is built. No proxy is ever used: a proxy would resolve the name
itself, past the check.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

import anyio
import httpcore
import httpx

from functions._shared.crm_addresses import AddressRefused, CrmAddressPolicy, is_address

log = logging.getLogger("functions.checked_transport")

# (host, port) -> the addresses the name resolves to. The system resolver in production; tests may pass another.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def resolve_with_system(host: str, port: int) -> list[str]:
    """getaddrinfo, as the connection would have done it (TCP; IPv6 and IPv4, in the system's order)."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


class CheckedAddressBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address check in front of `connect_tcp`."""

    def __init__(self, policy: CrmAddressPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolve = resolver
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._checked_addresses(host, port)
                failure: httpcore.ConnectError | None = None
                for address in addresses:
                    try:
                        return await self._network.connect_tcp(address, port, local_address=local_address,
                                                               socket_options=socket_options)
                    except httpcore.ConnectError as exc:
                        failure = exc  # the next address of the name, as getaddrinfo's order suggests
                assert failure is not None
                raise failure
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc

    async def _checked_addresses(self, host: str, port: int) -> list[str]:
        try:
            addresses = [host] if is_address(host) else list(await self._resolve(host, port))
        except OSError as exc:  # socket.gaierror: no such name
            raise httpcore.ConnectError(f"{host} could not be resolved: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        try:
            # Every address, not only the first: a name that also points inward is refused as a whole.
            listed = self._policy.listed(host, port)
            return [str(self._policy.check_address(address, listed=listed)) for address in addresses]
        except AddressRefused as exc:
            # For the caller this is "could not be reached", as for a name that does not resolve: which internal
            # names exist is not theirs to learn. The reason is in the log.
            log.warning("refused to connect to %s:%d: %s", host, port, exc)
            raise httpcore.ConnectError(f"{host} resolves to an address that is not allowed: {exc}") from exc

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("crm_server is reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (its request and response handling, its error mapping), over a pool whose connections
    are made by `CheckedAddressBackend`; the URL check comes first, before a pooled connection may be reused."""

    def __init__(self, policy: CrmAddressPolicy, *, resolver: Resolver = resolve_with_system,
                 limits: httpx.Limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)) -> None:
        ssl_context = httpx.create_ssl_context()
        super().__init__(verify=ssl_context, limits=limits)
        if type(getattr(self, "_pool", None)) is not httpcore.AsyncConnectionPool:
            raise RuntimeError("httpx.AsyncHTTPTransport no longer keeps an httpcore.AsyncConnectionPool in `_pool`: "
                               "functions/_shared/checked_transport.py must be adapted to this httpx version")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedAddressBackend(policy, resolver))
        self._policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # AddressRefused is not an httpx error: the caller answers it as the URL's fault, not as "unreachable".
        self._policy.check_url(request.url.scheme, request.url.raw_host.decode("ascii"), request.url.port)
        return await super().handle_async_request(request)

