"""Both HTTP ports of the stack (the API process and crm_server, as real processes on real sockets) refuse a request
head past its limits before any app sees it, stay responsive while someone sends one, and close connections that
never finish a head; heads within the limits are served as before."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from safeguards.http_limits import RequestLimits, check_uvicorn_shape
from supabase_local.database import DatabaseUrls
from supabase_local.keys import LocalKeys
from tests.crm_server.server_process import CrmServerProcess
from tests.helpers.net import status_of
from tests.reliability.stack import ApiProcess

HEADER_TIMEOUT = 1.0
LIMITS = RequestLimits()


@dataclass(frozen=True)
class Port:
    name: str
    host: str
    port: int

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}/health"

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)


@pytest.fixture(scope="module")
def api_port(tmp_path_factory: pytest.TempPathFactory, local_keys: LocalKeys,
             database_urls: DatabaseUrls) -> Iterator[Port]:
    api = ApiProcess(tmp_path_factory.mktemp("limits-api"), {
        "SUPABASE_SERVICE_ROLE_KEY": local_keys.service_role_key, "SUPABASE_ANON_KEY": local_keys.anon_key,
        "SUPABASE_JWT_SECRET": local_keys.jwt_secret, "TGCRM_REST_DATABASE_URL": database_urls.authenticator,
        "TGCRM_AUTH_DATABASE_URL": database_urls.auth_admin,
        "TGCRM_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)})
    api.start()
    try:
        yield Port("api", "127.0.0.1", api.port)
    finally:
        api.stop()


@pytest.fixture(scope="module")
def crm_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Port]:
    server = CrmServerProcess(tmp_path_factory.mktemp("limits-crm"),
                              env={"CRM_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)}, name="limits").start()
    try:
        yield Port("crm_server", "127.0.0.1", server.port)
    finally:
        server.stop()


@pytest.fixture(params=["api", "crm_server"])
def port(request: pytest.FixtureRequest) -> Port:
    return request.getfixturevalue("api_port" if request.param == "api" else "crm_port")


def exchange(port: Port, head: bytes, timeout: float = 5.0) -> bytes:
    """Send `head` (from a thread: the server may stop reading it) and return what comes back until the server
    closes, or until `timeout`; a reset counts as a close."""
    sock = port.connect(timeout)

    def send() -> None:
        try:
            sock.sendall(head)
        except OSError:
            pass  # refused and closed while we were still sending

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        answer += b"<still open>"
    finally:
        sock.close()
    sender.join(timeout)
    return answer


def get(path: str = "/health", headers: list[tuple[str, str]] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def kept_alive_exchange(sock: socket.socket) -> bytes:
    """One GET on a connection kept open: its whole answer (head and Content-Length body), or b"" if it closed."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return b""
        if not chunk:
            return b""
        answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_50_mb_header_is_refused_at_once_and_the_server_keeps_answering(port: Port) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (50 * 2**20) + b"\r\n\r\n"
    result: dict[str, object] = {}

    def attack() -> None:
        started = time.monotonic()
        result["answer"] = exchange(port, head, timeout=20)
        result["seconds"] = time.monotonic() - started

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    slowest = 0.0
    with httpx.Client(timeout=10) as client:
        while attacker.is_alive():
            started = time.monotonic()
            assert client.get(port.health_url).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.02)
    # Each request beside it was answered as usual: the event loop was never blocked for long.
    assert slowest < 1.0, f"{port.name}: /health took {slowest:.2f}s while the header was sent"
    answer = result["answer"]
    assert isinstance(answer, bytes)
    assert status_of(answer) in (431, None), answer[:200]
    assert b"<still open>" not in answer
    assert float(result["seconds"]) < LIMITS.discard_timeout_seconds + 3  # type: ignore[arg-type]


def test_a_header_of_a_megabyte_is_answered_431(port: Port) -> None:
    answer = exchange(port, get(headers=[("X-Big", "a" * 2**20)]))
    assert status_of(answer) == 431, answer[:200]
    assert answer.rstrip().endswith(b"Request Header Fields Too Large")


def test_more_than_100_header_fields_are_answered_431(port: Port) -> None:
    answer = exchange(port, get(headers=[(f"X-Field-{index}", "1") for index in range(LIMITS.max_header_count + 1)]))
    assert status_of(answer) == 431, answer[:200]


def test_a_request_line_past_32_kb_is_answered_414(port: Port) -> None:
    answer = exchange(port, get("/health?padding=" + "a" * LIMITS.max_request_line_bytes))
    assert status_of(answer) == 414, answer[:200]


def test_a_head_within_the_limits_is_served(port: Port) -> None:
    fields = [(f"X-Field-{index}", "b" * 200) for index in range(LIMITS.max_header_count - 10)]
    answer = exchange(port, get("/health?padding=" + "a" * 16_000, headers=fields))
    assert status_of(answer) == 200, answer[:200]


def test_idle_connections_are_closed_after_the_header_timeout(port: Port) -> None:
    sockets = [port.connect(timeout=HEADER_TIMEOUT + 5) for _ in range(200)]
    try:
        started = time.monotonic()
        for sock in sockets:
            assert sock.recv(1) == b""  # closed by the server, without an answer
        assert time.monotonic() - started < HEADER_TIMEOUT + 3
    finally:
        for sock in sockets:
            sock.close()


def test_a_trickled_head_is_answered_408_and_closed(port: Port) -> None:
    sock = port.connect(timeout=HEADER_TIMEOUT + 5)
    answer = b""
    try:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            while time.monotonic() - started < HEADER_TIMEOUT + 3:
                sock.sendall(b"X")  # one byte of a header name now and then: never a whole head
                sock.settimeout(0.2)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - started < HEADER_TIMEOUT + 3
    finally:
        sock.close()
    assert status_of(answer) == 408, answer[:200]


def test_a_kept_alive_connection_serves_requests_after_a_pause(port: Port) -> None:
    """The header timeout counts from a request's first byte, not from the connection's opening."""
    with httpx.Client(timeout=10) as client:
        assert client.get(port.health_url).status_code == 200
        time.sleep(HEADER_TIMEOUT / 2)
        assert client.get(port.health_url).status_code == 200
        time.sleep(HEADER_TIMEOUT / 2 + 0.2)
        assert client.get(port.health_url).status_code == 200


def test_an_idle_kept_alive_connection_outlives_the_clients_pool_expiry(api_port: Port, crm_port: Port) -> None:
    """A client may reuse an idle connection until its pool retires it (httpx: 5 s). A server that closed idle
    connections at that same moment made the reuse race its close, and the request failed with a ReadError (`make
    bench`, at a `send-code`): both ports keep an idle connection past the clients' expiry."""
    client_expiry = httpx.Limits().keepalive_expiry
    assert client_expiry is not None and LIMITS.keep_alive_seconds > client_expiry
    sockets = {port.name: (port, port.connect(timeout=10)) for port in (api_port, crm_port)}
    try:
        for port, sock in sockets.values():
            assert status_of(kept_alive_exchange(sock)) == 200, port.name
        time.sleep(client_expiry + 1.0)  # idle for longer than a client keeps it: a client has let it go by now
        for port, sock in sockets.values():
            answer = kept_alive_exchange(sock)
            assert status_of(answer) == 200, f"{port.name} closed an idle connection before a client would: {answer!r}"
    finally:
        for _, sock in sockets.values():
            sock.close()


def test_the_uvicorn_it_extends_still_has_what_it_extends() -> None:
    check_uvicorn_shape()
