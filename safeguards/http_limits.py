"""Limits on a request's head, enforced in uvicorn's HTTP/1.1 protocol before any app sees the request: the request
line (414), the size and number of header fields (431), and how long reading them may take (408, or closed).

uvicorn's httptools protocol has none of these: llhttp hands a header over only once it is complete, and httptools
concatenates its pieces, so a 50 MB header stalled the event loop for 5 s; and no timer runs before a connection's
first request, so 200 idle connections stayed open for good. uvicorn's `h11_max_incomplete_event_size` bounds the
head of its slower h11 protocol only, answered with a plain 400 and no deadline; `timeout_keep_alive` starts only
after a response; `limit_concurrency` answers 503 to everyone once idle connections fill it.

This is the one module that extends uvicorn's protocol; `check_uvicorn_shape` fails loudly when what it extends
changes.
"""

from __future__ import annotations

import asyncio
import enum
import http
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class RequestLimits:
    """What one request's head may be. Bodies are limited per route by the apps (`safeguards.request_body`)."""

    # Method, target and version. Our longest real ones are REST selects and `in.(…)` filters of a few hundred ids.
    max_request_line_bytes: int = 32 * 1024
    # The whole head, request line included (nginx allows 32 KB of headers by default, Node 16 KB).
    max_head_bytes: int = 64 * 1024
    max_header_count: int = 100
    # From a connection's opening, or a request's first byte, to the end of its head.
    header_timeout_seconds: float = 10.0
    # How long the rest of a body answered without being read (413, or 401 before it) may still arrive, discarded
    # unread, and how long a refused connection is drained before it closes: closing with unread bytes would reset
    # it, and the client could lose the answer it is about to read.
    discard_timeout_seconds: float = 5.0
    # How long a connection may sit idle between requests (uvicorn's `timeout_keep_alive`, 5 s by default). It must
    # outlast every client's pool expiry (httpx keeps an idle connection 5 s): with equal timeouts a client reuses
    # the connection just as the server closes it, and its request fails with a ReadError (`make bench` died so at
    # a `send-code`). Clients retire idle connections first; the head deadline still bounds a silent one's head.
    keep_alive_seconds: int = 30
    # How long a request's body may pause between two of its bytes (nginx's client_body_timeout, 60 s there): a
    # client that sent a head and part of a body, then nothing, held its request — and the server's shutdown, which
    # waits for every request — forever. Timed out, the connection closes and the app reads a disconnect.
    body_idle_timeout_seconds: float = 30.0
    # At a shutdown, how long requests still running may take before they are cancelled (uvicorn's
    # `timeout_graceful_shutdown`; unset, it waits for them without end): a SIGTERM ends the process in bounded time.
    graceful_shutdown_seconds: int = 10


# The methods of uvicorn's protocol this module extends, and the attributes it reads (`headers`: the fields of the
# head being read, which uvicorn's `on_header` appends to).
_EXTENDED = ("connection_made", "connection_lost", "data_received", "on_message_begin", "on_url",
             "on_headers_complete", "on_body", "on_message_complete", "on_response_complete")
_READ = ("transport", "loop", "flow", "server_state", "cycle", "headers")


class Deadline(enum.Enum):
    """What a connection is waiting for, against the clock: at most one at a time."""

    HEAD = "the end of a head"  # from a connection's opening, or a request's first byte
    BODY = "the body's next bytes"  # from the end of a head, and from each piece of its body
    DISCARD = "the end of a drain"  # an answered connection's unread rest, or a refused one's


def check_uvicorn_shape() -> None:
    """Refuse to start when uvicorn's HttpToolsProtocol no longer has what LimitedHttpToolsProtocol extends."""
    missing = [name for name in _EXTENDED if not callable(getattr(HttpToolsProtocol, name, None))]
    source = HttpToolsProtocol.__init__.__code__.co_names
    missing += [name for name in _READ if name not in source]
    if missing:
        raise RuntimeError(f"uvicorn's HttpToolsProtocol changed (no {', '.join(missing)}): the request limits of "
                           f"safeguards/http_limits.py need updating for this uvicorn")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `limits` on each request's head; use `limited_http_protocol(limits)`.

    A head is fed to the parser only up to what it may still take, so an oversized one never piles up in httptools.
    Past a limit the connection answers once, by itself (the app never sees the request), stops parsing and drains
    what still comes for `discard_timeout_seconds` before closing.

    A connection's deadlines (`Deadline`) are one moment and one timer: moving the deadline is an assignment, and
    the timer, when it fires early (the deadline moved later meanwhile), sleeps again until the deadline. A timer
    per deadline cost each request two `call_later`s and two cancels. The header fields are counted once, at the end
    of the head, rather than in a callback per field (ten for a supabase-py request): the head's size limit already
    bounds what piles up before then. Measured by feeding supabase-py's select head through a socketless transport
    on uvloop (median of 40 × 5,000 requests), the limits' CPU above uvicorn's own protocol went from 7.8 to 3.2 µs
    per request, about 2 % of the API process's CPU per select in the gateway bench.
    """

    limits: ClassVar[RequestLimits] = RequestLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # from a connection's start, or the end of a request, to the end of a head
        self._head_bytes = 0
        self._url_bytes = 0
        self._refusal: int | None = None  # the status this connection is refused with, once decided
        self._refused = False
        self._deadline: Deadline | None = None
        self._deadline_at = 0.0  # loop time; meaningful while `_deadline` is set
        self._timer: asyncio.TimerHandle | None = None  # fires at or before `_deadline_at`

    # --- the connection ---------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # answered: what still comes is drained unread
        if not self._reading_head:
            super().data_received(data)
            return
        if self._deadline is not Deadline.HEAD:
            self._arm_head_deadline()
        room = self.limits.max_head_bytes - self._head_bytes
        head, rest = (data, b"") if len(data) <= room else (data[:room], data[room:])
        self._head_bytes += len(head)
        super().data_received(head)
        if self._refusal is None and rest:
            if self._reading_head:
                # A request line past its limit was refused in on_url already, so the rest is header fields.
                self._refusal = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            elif not self.transport.is_closing():
                super().data_received(rest)
        if self._refusal is not None and not self._refused:
            self._send_refusal()

    # --- parser callbacks: counted, and ignored once the connection is refused --------------------------------------

    def on_message_begin(self) -> None:
        if self._refusal is None:
            super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._refusal is not None:
            return
        self._url_bytes += len(url)
        if self._url_bytes > self.limits.max_request_line_bytes:
            self._refusal = http.HTTPStatus.REQUEST_URI_TOO_LONG
            return
        super().on_url(url)

    def on_headers_complete(self) -> None:
        if self._refusal is not None:
            return
        if len(self.headers) > self.limits.max_header_count:
            self._refusal = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
            return
        self._reading_head = False
        self._arm_body_deadline()  # replaced at once when the message has no body
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            self._arm_body_deadline()
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is not None:
            return
        self._deadline = None  # the body's or the discard's, whichever ran
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = self._url_bytes = 0
        if self.cycle is not None and self.cycle.response_complete:
            # The body ended after its answer (discarded): uvicorn's keep-alive timer ran at the answer and was
            # stopped by the body's bytes, so the connection's idleness is timed from here.
            self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (not self._reading_head and self.cycle is not None and self.cycle.response_complete
                and not self.transport.is_closing()):
            # Answered before its whole body came (e.g. 413 on Content-Length): the rest is discarded as it
            # arrives, but not forever.
            self._set_deadline(Deadline.DISCARD, self.limits.discard_timeout_seconds)

    # --- deadlines and refusals ---------------------------------------------------------------------------------------

    def _set_deadline(self, deadline: Deadline, seconds: float) -> None:
        self._deadline = deadline
        self._deadline_at = when = self.loop.time() + seconds
        timer = self._timer
        if timer is None or timer.when() > when:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(when, self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return  # what it was set for has ended
        if self._deadline_at > self.loop.time():
            self._timer = self.loop.call_at(self._deadline_at, self._deadline_reached)  # moved later meanwhile
            return
        self._deadline = None
        if deadline is Deadline.HEAD:
            self._head_timed_out()
        elif deadline is Deadline.BODY:
            self._body_timed_out()
        else:
            self.transport.close()

    def _arm_head_deadline(self) -> None:
        self._set_deadline(Deadline.HEAD, self.limits.header_timeout_seconds)

    def _head_timed_out(self) -> None:
        if self.transport.is_closing() or self._refusal is not None:
            return
        if self._head_bytes == 0:
            self.transport.close()  # idle: there is no request to answer
            return
        self._refusal = http.HTTPStatus.REQUEST_TIMEOUT
        self._send_refusal()

    def _arm_body_deadline(self) -> None:
        self._set_deadline(Deadline.BODY, self.limits.body_idle_timeout_seconds)

    def _body_timed_out(self) -> None:
        if self.flow.read_paused:
            self._arm_body_deadline()  # we stopped reading (the app has not taken what came): not the client's pause
            return
        if not self.transport.is_closing():
            # The app may be reading the body (or waiting to): closing tells it the client is gone.
            self.transport.close()

    def _send_refusal(self) -> None:
        self._refused = True
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head past its limit while the request before it is answered: that answer ends the
            # connection instead of being followed by ours.
            self.cycle.keep_alive = False
        else:
            self.transport.write(self._refusal_bytes())
            if self.transport.can_write_eof():
                self.transport.write_eof()
        self.flow.resume_reading()
        self._set_deadline(Deadline.DISCARD, self.limits.discard_timeout_seconds)

    def _refusal_bytes(self) -> bytes:
        assert self._refusal is not None
        status = http.HTTPStatus(self._refusal)
        body = f"{status.phrase}\n".encode("ascii")
        lines = [f"HTTP/1.1 {status.value} {status.phrase}".encode("ascii")]
        lines += [name + b": " + value for name, value in self.server_state.default_headers]
        lines += [b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(body),
                  b"connection: close"]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def limited_http_protocol(limits: RequestLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=…)` enforcing `limits`."""
    check_uvicorn_shape()
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


def uvicorn_options(limits: RequestLimits) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.Config` every HTTP port of ours is served with."""
    # No WebSocket routes anywhere: an Upgrade request is served as plain HTTP instead of handed to another protocol
    # these limits do not cover.
    return {"http": limited_http_protocol(limits), "ws": "none", "timeout_keep_alive": limits.keep_alive_seconds,
            "timeout_graceful_shutdown": limits.graceful_shutdown_seconds}
