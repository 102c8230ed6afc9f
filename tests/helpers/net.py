"""Socket helpers shared by the tests: free loopback ports and waiting for a service to answer."""

from __future__ import annotations

import socket
import time

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now; the OS picks it so parallel runs do not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
