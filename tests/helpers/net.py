"""Socket helpers shared by the tests: free loopback ports, waiting for a service to answer, and bare request heads."""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now; the OS picks it so parallel runs do not collide."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different free ports: each stays bound until all are picked (back-to-back `free_port()` calls may
    be handed the same port, which made a test see two services on one port)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def wait_http(url: str, timeout: float = 30.0, expect_status: int | None = None) -> httpx.Response:
    """Poll `url` until it answers (any status, or `expect_status`), so tests start only on a ready service."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2.0)
            if expect_status is None or response.status_code == expect_status:
                return response
        except httpx.HTTPError as exc:
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s (last error: {last_error})")


def own_addresses() -> list[str]:
    """This machine's addresses other than loopback and IPv6 link-local (Linux: its interfaces' IPv4 addresses and
    /proc/net/if_inet6), for tests that need a listener reachable on a non-loopback address."""
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                request = struct.pack("256s", name.encode()[:15])
                answer = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue
            address = socket.inet_ntoa(answer[20:24])
            if not address.startswith("127."):
                found.append(address)
    inet6 = Path("/proc/net/if_inet6")
    for line in inet6.read_text().splitlines() if inet6.exists() else []:
        raw, _, _, scope, *_ = line.split()
        if scope == "00":  # global scope only (not loopback 10, link-local 20)
            found.append(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw)))
    return found


def answer_to_head(url: str, method: str, headers: dict[str, str], timeout: float = 5.0) -> bytes:
    """Send only a request's head to `url` (a body it declares is never sent) and return what the server answers
    before `timeout`: a server that waits for the body first answers nothing (b"")."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    answer = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        deadline = time.monotonic() + timeout
        try:
            while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
    return answer


def status_of(answer: bytes) -> int | None:
    """The status of an HTTP/1.1 answer, or None when there is none."""
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer.split(b" ", 2)[1])
