"""Hypothesis strategies for HTTP requests to crm_server and the functions: bodies, headers, query strings and path
segments, mixing values a route accepts with anything JSON (or not JSON at all) can carry; and the check every
answer must pass (no 5xx but an upstream's, in time, every error in the contract's shape).

A strategy draws a *batch* of requests that are fired concurrently, so 2,000 cases per route fit in seconds and
concurrent requests to one route are part of what is fuzzed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import string
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from hypothesis import strategies as st

# --- what a request is ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None

    def describe(self) -> str:
        body = self.body if self.body is None or len(self.body) < 300 else self.body[:300] + b"..."
        return (f"{self.method} {self.url} params={list(self.params)} headers={list(self.headers)} "
                f"body={body!r}")


@dataclass
class Answer:
    request: FuzzRequest
    status: int | None
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


class Firing:
    """An asyncio loop on its own thread that sends a batch of requests concurrently, from synchronous Hypothesis
    tests. Plain HTTP/1.1 over asyncio streams, one connection per request: a general client's own work (connection
    pool bookkeeping, header models) cost more than the servers' answers, and 58,000 requests make that count."""

    def __init__(self, timeout: float = 20.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-firing", daemon=True)
        self._thread.start()
        self._timeout = timeout

    def fire(self, requests: Sequence[FuzzRequest]) -> list[Answer]:
        return self.submit(requests).result(self._timeout * 3)

    def submit(self, requests: Sequence[FuzzRequest]) -> concurrent.futures.Future[list[Answer]]:
        """Send a batch and return at once: the next batch is drawn while this one is in flight."""
        return asyncio.run_coroutine_threadsafe(self._fire(requests), self._loop)

    async def _fire(self, requests: Sequence[FuzzRequest]) -> list[Answer]:
        return list(await asyncio.gather(*(self._one(request) for request in requests)))

    async def _one(self, request: FuzzRequest) -> Answer:
        started = time.monotonic()
        try:
            status, headers, body = await asyncio.wait_for(_exchange(request), self._timeout)
        except TimeoutError:
            return Answer(request, None, error=f"no answer within {self._timeout}s",
                          seconds=time.monotonic() - started)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            return Answer(request, None, error=f"{type(exc).__name__}: {exc}", seconds=time.monotonic() - started)
        return Answer(request, status, body.decode("utf-8", "replace"), headers, seconds=time.monotonic() - started)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _exchange(request: FuzzRequest) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, the answer read by its length (or chunks). The connection is kept open
    until the answer is in: a server that answers before reading a large body (401 first) would otherwise reset a
    closed connection and lose the answer."""
    parts = urlsplit(request.url)
    target = parts.path or "/"
    if request.params:
        target += "?" + urlencode(list(request.params), quote_via=quote)
    lines = [f"{request.method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in request.headers]
    if request.body is not None:
        lines.append(f"Content-Length: {len(request.body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=2**20)
    try:
        writer.write(head + (request.body or b""))
        await writer.drain()
        header_block = (await reader.readuntil(b"\r\n\r\n"))[:-4]
        status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if request.method == "HEAD" or status in (204, 304):
            body = b""
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append((await reader.readexactly(size + 2))[:-2])
            body = b"".join(chunks)
        else:
            body = await reader.read(-1)
    finally:
        writer.close()
    return status, headers, body


# --- the check ------------------------------------------------------------------------------------------------------


def problems(answer: Answer, upstream_codes: frozenset[str]) -> list[str]:
    """What is wrong with an answer: a transport failure or hang, a 5xx that is not an upstream's contract error,
    or an error body not in the contract's shape `{success: false, error, code, field?}`."""
    if answer.status is None:
        return [answer.error or "no answer"]
    found: list[str] = []
    if answer.status >= 500 and answer.status not in (502, 503, 504):
        found.append(f"answered {answer.status}")
    if answer.status < 400 or answer.request.method == "HEAD":
        return found
    try:
        body = json.loads(answer.text)
    except ValueError:
        return [*found, f"{answer.status} with a body that is not JSON: {answer.text[:200]!r}"]
    if not isinstance(body, dict):
        return [*found, f"{answer.status} with a JSON body that is not an object: {answer.text[:200]!r}"]
    if body.get("success") is not False:
        found.append(f"{answer.status} without success: false")
    if not isinstance(body.get("error"), str) or not body.get("error"):
        found.append(f"{answer.status} without an error message")
    code = body.get("code")
    if not isinstance(code, str) or not code:
        found.append(f"{answer.status} without a machine code")
    if "field" in body and body["field"] is not None and not isinstance(body["field"], str):
        found.append(f"{answer.status} with a field that is not a name: {body['field']!r}")
    if answer.status >= 500 and code not in upstream_codes:
        found.append(f"{answer.status} {code}: a 5xx that is not an upstream's error")
    return found


# --- strategies -----------------------------------------------------------------------------------------------------

# Hypothesis draws are the fuzzer's cost (2,000 cases × 29 routes): fresh random scalars, and structured junk taken
# from a fixed assortment rather than generated recursively.
JSON_JUNK: tuple[object, ...] = (
    None, True, False, 0, -1, 2**31, 2**53 + 1, -(2**63), 10**30, 0.5, -0.0, 1e308, "", " ", "null", "true", "0",
    [], {}, [None], [[[]]], {"": ""}, {"a": {"b": {"c": {}}}}, [1, "a", None, {"x": []}], {"$ref": "#"},
    {"project_id": None}, "\u0000", "\n\r\t", "\ufeff", "ß" * 70, "字" * 5000, "😀", "%s%s%n", "${jndi:x}",
    "\\", "'", '"', "--", "/*", "*/", "OR 1=1", "+0", "+", "@", "#", "?", "&", "=", "1" * 40, "+1" + "9" * 40,
)
JSON_VALUES = st.one_of(st.sampled_from(JSON_JUNK), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=30), st.lists(st.sampled_from(JSON_JUNK), max_size=3),
                        st.dictionaries(st.sampled_from(["a", "id", "text", "", "__proto__"]),
                                        st.sampled_from(JSON_JUNK), max_size=2))
TOKEN = st.sampled_from(["a", "id", "x", "key", "phone", "project_id", "text", "", "A" * 40, "ключ", "%20"])
HEADER_NAME = st.sampled_from(["a", "id", "forwarded-for", "real-ip", "A" * 40, "api-key", "lovable-secret"])
HEADER_VALUE = st.one_of(st.sampled_from(["", "x", "1", "null", "bearer", "a" * 300, "é", "\x7f", "*/*", ",,,"]),
                         st.text(alphabet=string.ascii_letters + string.digits + " ,;=-_/.:", max_size=40))
NASTY_TEXT = st.sampled_from(["", " ", "\u0000", "😀" * 3, "a" * 5000, "' OR 1=1 --", "<script>", "%00",
                              "../../etc/passwd", "null", "\u202e", "12345", "+", "@", "@@", "-1", "0", "1e309",
                              "NaN", "\ud7ff", "\t"])


def fuzzed(*valid: Any) -> st.SearchStrategy[Any]:
    """A field's value: one the route accepts (from `valid`, values or strategies), or anything else."""
    choices: list[st.SearchStrategy[Any]] = [v if isinstance(v, st.SearchStrategy) else st.just(v) for v in valid]
    return st.one_of(*choices, JSON_VALUES, NASTY_TEXT)


# Strategies are built once: Hypothesis validates each new strategy object, which costs more than drawing from it.
TENTHS = st.integers(0, 9)
QUARTERS = st.integers(0, 3)
COIN = st.booleans()
BODY_KINDS = st.sampled_from(["object"] * 6 + ["any-json", "bytes", "empty", "broken", "huge"])
BINARY = st.binary(max_size=100)
EMPTY_BODIES = st.sampled_from([None, b"", b"   "])
BROKEN_BODIES = st.sampled_from([b'{"a": NaN}', b"{", b'{"text": "\xff\xfe"}', b"[1,2", b'{"x": 1e999}',
                                 b'{"__proto__": {"admin": true}}', b"\xef\xbb\xbf{}", b'"just a string"',
                                 b'{"a":' * 2000 + b"1" + b"}" * 2000])
REPEATS = st.sampled_from([0, 1, 1, 1, 2])  # a known parameter absent, once, or repeated
CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data", "application/json; charset=latin-1", ""])


def json_body(fields: dict[str, st.SearchStrategy[Any]], max_bytes: int = 70_000) -> st.SearchStrategy[bytes | None]:
    """Mostly an object with the route's fields (some left out, some extra), sometimes any JSON, sometimes no JSON."""
    huge = b'{"pad": "' + b"x" * max_bytes + b'"}'

    @st.composite
    def body(draw: st.DrawFn) -> bytes | None:
        kind = draw(BODY_KINDS)
        if kind == "object":
            data = {name: draw(strategy) for name, strategy in fields.items() if draw(TENTHS) > 0}
            if draw(QUARTERS) == 0:
                data[draw(TOKEN)] = draw(JSON_VALUES)
            return json.dumps(data).encode()
        if kind == "any-json":
            return json.dumps(draw(JSON_VALUES)).encode()
        if kind == "bytes":
            return draw(BINARY)
        if kind == "empty":
            return draw(EMPTY_BODIES)
        if kind == "broken":
            return draw(BROKEN_BODIES)
        return huge

    return body()


def query(known: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    @st.composite
    def params(draw: st.DrawFn) -> tuple[tuple[str, str], ...]:
        items: list[tuple[str, str]] = []
        for name, strategy in known.items():
            for _ in range(draw(REPEATS)):
                value = draw(strategy)
                # Within what HTTP servers take in a request line (uvicorn answers longer ones itself, as text).
                items.append((name, (value if isinstance(value, str) else json.dumps(value))[:1000]))
        if draw(QUARTERS) == 0:
            items.append((draw(TOKEN), draw(HEADER_VALUE)))
        return tuple(items)

    return params()


def headers(auth: st.SearchStrategy[dict[str, str]],
            extra: dict[str, st.SearchStrategy[str]] | None = None) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    @st.composite
    def build(draw: st.DrawFn) -> tuple[tuple[str, str], ...]:
        result = dict(draw(auth))
        for name, strategy in (extra or {}).items():
            if draw(COIN):
                result[name] = draw(strategy)
        if draw(QUARTERS) == 0:
            result["content-type"] = draw(CONTENT_TYPES)
        if draw(QUARTERS) == 0:
            result[f"x-{draw(HEADER_NAME)}"] = draw(HEADER_VALUE)
        # Only what HTTP/1.1 can carry: control characters and surrounding blanks are not sendable.
        return tuple((name, _header_safe(value)) for name, value in result.items())

    return build()


def _header_safe(value: str) -> str:
    return "".join(ch for ch in value if " " <= ch <= "~").strip()


def path_segment(*valid: Any) -> st.SearchStrategy[str]:
    return st.one_of(*[st.just(str(value)) for value in valid], st.text(min_size=1, max_size=20),
                     st.integers().map(str), NASTY_TEXT.filter(bool)).map(lambda value: quote(value, safe=""))


@dataclass(frozen=True)
class Route:
    """One route of a service and how to fuzz it."""

    service: str
    method: str
    path: str  # may contain one `{}` for a path segment
    body: dict[str, st.SearchStrategy[Any]] | None = None  # None: no body expected
    query: dict[str, st.SearchStrategy[Any]] = field(default_factory=dict)
    segment: st.SearchStrategy[str] | None = None
    extra_headers: dict[str, st.SearchStrategy[str]] = field(default_factory=dict)
    # Signs a drawn request as crm_server would (the webhook), so the payload's validation is reached too.
    sign: Callable[[FuzzRequest, bool], FuzzRequest] | None = None

    @property
    def name(self) -> str:
        return f"{self.service} {self.method} {self.path.replace('{}', '{…}')}"


OTHER_METHODS = st.sampled_from(("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def requests_for(route: Route, base_url: str, auth: st.SearchStrategy[dict[str, str]],
                 max_body: int) -> st.SearchStrategy[FuzzRequest]:
    body_strategy = json_body(route.body or {}, max_bytes=max_body)
    query_strategy = query(route.query)
    headers_strategy = headers(auth, route.extra_headers)

    @st.composite
    def request(draw: st.DrawFn) -> FuzzRequest:
        method = route.method if draw(TENTHS) > 0 else draw(OTHER_METHODS)
        path = route.path.format(draw(route.segment)) if route.segment is not None else route.path
        body = None
        if route.body is not None or draw(TENTHS) == 0:
            body = draw(body_strategy)
        if method in ("GET", "DELETE") and route.body is None and draw(COIN):
            body = None
        drawn = FuzzRequest(method=method, url=f"{base_url}{path}", params=draw(query_strategy),
                            headers=draw(headers_strategy), body=body)
        if route.sign is not None:
            drawn = route.sign(drawn, draw(COIN))
        return drawn

    return request()
