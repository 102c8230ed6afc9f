"""Both HTTP ports of the stack (the API process and crm_server, as real processes on real sockets) refuse a request
head past its limits before any app sees it, stay responsive while someone sends one, and close connections that
never finish a head or whose body stalls; heads within the limits are served as before, and a SIGTERM ends a server
in bounded time whatever its clients do."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from safeguards.http_limits import RequestLimits, check_uvicorn_shape, uvicorn_options
from supabase_local.database import DatabaseUrls
from supabase_local.keys import LocalKeys
from tests.crm_server.server_process import CrmServerProcess
from tests.helpers.net import free_port, status_of, wait_http
from tests.reliability.stack import ApiProcess

HEADER_TIMEOUT = 1.0
BODY_IDLE_TIMEOUT = 1.0
LIMITS = RequestLimits()


@dataclass(frozen=True)
class Port:
    name: str
    host: str
    port: int
    api_key: str = ""  # crm_server's admin key: its routes read a body only after the key

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
        "TGCRM_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "TGCRM_HTTP_BODY_IDLE_TIMEOUT_SECONDS": str(BODY_IDLE_TIMEOUT)})
    api.start()
    try:
        yield Port("api", "127.0.0.1", api.port)
    finally:
        api.stop()


@pytest.fixture(scope="module")
def crm_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Port]:
    server = CrmServerProcess(tmp_path_factory.mktemp("limits-crm"),
                              env={"CRM_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
                                   "CRM_HTTP_BODY_IDLE_TIMEOUT_SECONDS": str(BODY_IDLE_TIMEOUT)},
                              name="limits").start()
    try:
        yield Port("crm_server", "127.0.0.1", server.port, server.admin_key or "")
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


def _stalled_body(sock: socket.socket, path: str, api_key: str = "") -> None:
    """A POST's head and the first bytes of its 100-byte body, then nothing."""
    key = f"X-API-Key: {api_key}\r\n" if api_key else ""
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{key}"
                 "Content-Length: 100\r\n\r\n{\"a\":".encode())


def test_a_stalled_body_is_closed_after_the_body_idle_timeout(port: Port) -> None:
    sock = port.connect(timeout=BODY_IDLE_TIMEOUT + 5)
    try:
        started = time.monotonic()
        # Routes that read their body before anything else: the function host reads it up to its limit first.
        _stalled_body(sock, "/functions/v1/telegram-crm-webhook?key=x" if port.name == "api" else "/sandbox/incoming",
                      port.api_key)
        try:
            while sock.recv(65536):
                pass  # an answer the app gave on seeing the disconnect, if any
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < BODY_IDLE_TIMEOUT + 3
    finally:
        sock.close()
    assert httpx.get(port.health_url, timeout=5).status_code == 200


def test_a_body_that_keeps_coming_is_not_cut(crm_port: Port) -> None:
    """The body timeout is between bytes, not for the whole body: a slow upload that keeps sending is served."""
    body = b'{"messages": []}'.ljust(40)
    sock = crm_port.connect(timeout=10)
    try:
        sock.sendall(b"POST /sandbox/incoming HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"X-API-Key: %s\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                     % (crm_port.api_key.encode(), len(body)))
        started = time.monotonic()
        for index in range(0, len(body), 4):  # 10 pieces, BODY_IDLE_TIMEOUT / 3 apart: 3 s in all
            sock.sendall(body[index:index + 4])
            time.sleep(BODY_IDLE_TIMEOUT / 3)
        assert time.monotonic() - started > 2 * BODY_IDLE_TIMEOUT
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    finally:
        sock.close()
    # Read to its end and judged by the app (an empty list of messages: 422 naming the field) rather than cut.
    assert status_of(answer) == 422 and b"messages" in answer, answer[:300]


def test_a_sigterm_ends_crm_server_while_a_request_is_stuck(tmp_path: Path) -> None:
    """uvicorn waits for running requests at a shutdown, without end unless told: one client that sent half a body
    held a SIGTERM'd crm_server forever. Now its requests get `graceful_shutdown_seconds` (the body timeout, 30 s,
    is left at its default here so that it is the shutdown's bound that ends it)."""
    assert LIMITS.graceful_shutdown_seconds + 10 < LIMITS.body_idle_timeout_seconds
    server = CrmServerProcess(tmp_path, name="stuck").start()
    process = server.process
    assert process is not None
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        _stalled_body(sock, "/sandbox/incoming", server.admin_key or "")
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=LIMITS.graceful_shutdown_seconds + 10)
        except subprocess.TimeoutExpired:
            server.stop(timeout=1)
            pytest.fail("crm_server did not exit after SIGTERM while a request's body was stalled")
        assert time.monotonic() - started < LIMITS.graceful_shutdown_seconds + 10
    finally:
        sock.close()
        server.stop()


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


# A connection's deadlines share one timer (LimitedHttpToolsProtocol): a deadline moved later than the timer must
# not fire at the timer's moment, and one moved earlier must not wait for it. Served in-process with its own limits,
# so the two orders can be told apart: the head's deadline (3 s) after, and before, the drain's (0.5 s).
OWN_LIMITS = RequestLimits(header_timeout_seconds=3.0, body_idle_timeout_seconds=10.0, discard_timeout_seconds=0.5)


async def _answers_before_reading(scope: Scope, receive: Receive, send: Send) -> None:
    """GET: 200; POST: 413 without reading the body (as a route refusing a Content-Length past its limit)."""
    if scope["type"] != "http":
        return
    status = 413 if scope["method"] == "POST" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def own_limits_port() -> Iterator[Port]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_answers_before_reading, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off", **uvicorn_options(OWN_LIMITS)))
    thread = threading.Thread(target=server.run, name="own-limits-server", daemon=True)
    thread.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/", expect_status=200)
        yield Port("own-limits", "127.0.0.1", port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_head_begun_later_on_a_kept_alive_connection_gets_its_whole_header_timeout(own_limits_port: Port) -> None:
    """The timer armed for the first request's head fires while the second's has time left: it waits on."""
    sock = own_limits_port.connect(timeout=OWN_LIMITS.header_timeout_seconds + 5)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(sock.recv(65536)) == 200
        time.sleep(OWN_LIMITS.header_timeout_seconds / 2)
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # a head that never ends
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        waited = time.monotonic() - started
    finally:
        sock.close()
    assert status_of(answer) == 408, answer[:200]
    assert OWN_LIMITS.header_timeout_seconds - 0.2 < waited < OWN_LIMITS.header_timeout_seconds + 2


def test_an_answered_connection_is_drained_for_the_discard_timeout_only(own_limits_port: Port) -> None:
    """Answered before its body came, the connection closes after the drain's 0.5 s, not at the head's timer."""
    sock = own_limits_port.connect(timeout=OWN_LIMITS.header_timeout_seconds + 5)
    try:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        answer = sock.recv(65536)
        started = time.monotonic()
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        waited = time.monotonic() - started
    finally:
        sock.close()
    assert status_of(answer) == 413, answer[:200]
    assert waited < OWN_LIMITS.header_timeout_seconds - 1, f"closed after {waited:.2f}s"
