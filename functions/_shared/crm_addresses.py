"""Which crm_server URLs and addresses the functions may reach: a signed-in user names the URL (`crmApiUrl`), so the
functions host must never become their way into the networks it sits in.

The one decision, applied twice to every connection (by `checked_transport`): to the URL before anything is sent
(`check_url`), then to every address its host name resolves to, right before connecting to one (`check_address`).
- Outside the local stack: https only, to public addresses only. Private, loopback, link-local, shared (CGNAT),
  multicast, unspecified, reserved and documentation ranges are refused, cloud metadata endpoints among them, and
  so are IPv6 addresses that carry such an IPv4 address (IPv4-mapped, NAT64, 6to4).
- On the local stack (`CRM_ALLOW_HTTP_LOOPBACK`, which `tgcrm up` sets): http or https to loopback only, named as
  `localhost` or a loopback address; nothing else, not even a public address.
- `FUNCTIONS_CRM_HOSTS` (comma-separated `host[:port]`, names in ASCII (punycode); no port means the scheme's
  default), when set, narrows either mode to those hosts; and a host the operator listed may be on a private
  network (the usual place of a self-hosted crm_server: beside the functions, in one VPC). Cloud metadata endpoints
  and link-local addresses stay refused even then.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPAddress = IPv4Address | IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}

# IANA's special-purpose ranges (and a few Python's ipaddress does not flag on every version): never a crm_server.
REFUSED_IPV4: tuple[tuple[IPv4Network, str], ...] = tuple((IPv4Network(network), what) for network, what in (
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),  # Alibaba Cloud's metadata endpoint is 100.100.100.200
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),  # AWS, GCP, Azure and OpenStack metadata: 169.254.169.254
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),  # Oracle Cloud's metadata endpoint is 192.0.0.192
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # 255.255.255.255 among them
))
REFUSED_IPV6: tuple[tuple[IPv6Network, str], ...] = tuple((IPv6Network(network), what) for network, what in (
    ("::/8", "reserved"),  # ::, ::1 and IPv4-compatible addresses (IPv4-mapped ones are unwrapped first)
    ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard-only"),
    ("2001::/23", "IETF protocol assignments"),  # Teredo, ORCHID, ...
    ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local (private)"),  # AWS's IPv6 metadata endpoint is fd00:ec2::254
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
))
# What a listed host may still never resolve to: the clouds' metadata endpoints, and link-local addresses.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(address) for address in (
    "169.254.169.254", "100.100.100.200", "192.0.0.192", "fd00:ec2::254"))
# Private kinds a listed host may have: RFC 1918, unique local, shared (CGNAT), loopback.
LISTED_MAY_BE = frozenset({"private", "unique local (private)", "shared (CGNAT)", "loopback"})
NAT64 = IPv6Network("64:ff9b::/96")
SIX_TO_FOUR = IPv6Network("2002::/16")


class AddressRefused(Exception):
    """A URL or an address the policy does not let the functions reach; the message says why."""


@dataclass(frozen=True)
class CrmHost:
    """One entry of FUNCTIONS_CRM_HOSTS: a host name or address, and its port (None: the scheme's default)."""

    host: str
    port: int | None = None

    def matches(self, host: str, port: int, default_port: int) -> bool:
        return self.host == host and port == (default_port if self.port is None else self.port)


def parse_crm_hosts(value: str | None) -> tuple[CrmHost, ...]:
    """`crm.example.com, crm2.example.com:8443, [2001:db8::1]:443` as CrmHost values; ValueError names a bad entry."""
    hosts: list[CrmHost] = []
    for entry in (value or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        host, port = entry, None
        if entry.startswith("["):
            host, closed, rest = entry[1:].partition("]")
            if not closed:
                raise ValueError(f"{entry!r} is not host[:port]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"{entry!r} is not host[:port]")
                port = rest[1:]
        elif entry.count(":") == 1:
            host, port = entry.split(":")
        if not host or "/" in host or "@" in host or (":" in host and not is_address(host)):
            raise ValueError(f"{entry!r} is not host[:port]")
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{entry!r} has no valid port")
        hosts.append(CrmHost(_normal_host(host), int(port) if port is not None else None))
    return tuple(hosts)


@dataclass(frozen=True)
class CrmAddressPolicy:
    local_mode: bool
    allowed_hosts: tuple[CrmHost, ...] = ()

    def check_url(self, scheme: str, host: str, port: int | None) -> None:
        """Refuse a URL before anything is sent: its scheme, its host against the allow list and, for an address
        or on the local stack, its host itself."""
        if scheme not in DEFAULT_PORTS:
            raise AddressRefused("crmApiUrl must be an https:// URL")
        if scheme == "http" and not self.local_mode:
            raise AddressRefused("crmApiUrl must use https (plain http only to loopback on a local stack)")
        host = _normal_host(host)
        port = port or DEFAULT_PORTS[scheme]
        if self.allowed_hosts and not any(allowed.matches(host, port, DEFAULT_PORTS[scheme])
                                          for allowed in self.allowed_hosts):
            raise AddressRefused(f"{_shown(host)}:{port} is not one of the CRM servers this host may reach "
                                 f"(FUNCTIONS_CRM_HOSTS)")
        if is_address(host):
            self.check_address(host, listed=self.listed(host, port))
        elif self.local_mode and host != "localhost":
            raise AddressRefused("on a local stack, crmApiUrl must name localhost or a loopback address")

    def listed(self, host: str, port: int) -> bool:
        """Whether the operator named this host (and port) in FUNCTIONS_CRM_HOSTS."""
        host = _normal_host(host)
        return any(allowed.host == host and (port == allowed.port if allowed.port is not None
                                             else port in DEFAULT_PORTS.values())
                   for allowed in self.allowed_hosts)

    def check_address(self, address: str, *, listed: bool = False) -> IPAddress:
        """The address, if the functions may connect to it; else AddressRefused saying what kind it is.
        `listed`: it is what a host of FUNCTIONS_CRM_HOSTS resolved to, which may be a private address."""
        ip = ipaddress.ip_address(address)
        if self.local_mode:
            if not _unwrapped_mapped(ip).is_loopback:
                raise AddressRefused(f"{ip} is not a loopback address (a local stack reaches loopback only)")
            return ip
        kind = refused_kind(ip)
        plain = _unwrapped_mapped(ip)
        if kind is not None and listed and plain not in METADATA_ADDRESSES and not plain.is_link_local and (
                kind in LISTED_MAY_BE or plain.is_loopback):
            return ip  # the operator's own crm_server, on its private network or this machine
        if kind is not None:
            raise AddressRefused(f"{ip} is a {kind} address")
        return ip


def refused_kind(ip: IPAddress) -> str | None:
    """What kind of address the functions never reach outside a local stack, or None for a public one."""
    if isinstance(ip, IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            kind = refused_kind(embedded)
            return None if kind is None else f"{kind} (inside {ip})"
        for network, kind in REFUSED_IPV6:
            if ip in network:
                return kind
    else:
        for network, kind in REFUSED_IPV4:
            if ip in network:
                return kind
    # Whatever else Python knows not to be public (a registry entry newer than the tables above).
    return None if ip.is_global else "non-public"


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one leads to: IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in SIX_TO_FOUR:
        return ip.sixtofour
    return None


def _unwrapped_mapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_address(host: str) -> bool:
    """Whether `host` is an IP address (IPv6 without brackets) rather than a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _normal_host(host: str) -> str:
    host = host.strip().strip("[]").lower().rstrip(".")
    return str(ipaddress.ip_address(host)) if is_address(host) else host


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host
