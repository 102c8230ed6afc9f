"""Prometheus metrics of the functions host: requests and latency per function, and upstream failures by kind,
on the host's own registry, served at `/functions/v1/metrics` behind FUNCTIONS_METRICS_KEY.

Labels come from fixed sets only (the host's function names, HTTP methods it routes, contract error codes): never
a path, phone, client or organization id, so a scrape leaks nothing a caller sent.
"""

from __future__ import annotations

import contextlib
import hmac
import re
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from functions._shared import errors
from functions._shared.errors import FunctionError, MetricsKeyError, error_response, observing_errors

UNKNOWN_FUNCTION = "unknown"
# A function takes seconds at most (the send timeout is 30 s); the tail past that is one bucket.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Contract codes are SCREAMING_SNAKE; anything else becomes OTHER so a label can never carry free text.
_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,47}$")
_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")

# Which service an error says failed, by its class (the most specific first). SendOutcomeUnknownError and
# RecipientNotFoundError are crm_server's and Wappi's alike: "provider".
_UPSTREAMS: tuple[tuple[type[FunctionError], str], ...] = (
    (errors.ConnectRefusedError, ""),  # wraps a refusal already counted when it was made
    (errors.CrmServerAddressRefusedError, ""),  # our policy refused the address: nothing was called
    (errors.WappiError, "wappi"),
    (errors.CrmServerUnreachableError, "crm_server"),
    (errors.CrmServerRejectedError, "crm_server"),
    (errors.MediaFetchFailedError, "crm_server"),
    (errors.MediaMismatchError, "crm_server"),
    (errors.UpstreamError, "provider"),
    (errors.MediaStoreFailedError, "storage"),
    (errors.DatabaseError, "database"),
)


def upstream_of(error: FunctionError) -> tuple[str, str] | None:
    """(upstream, kind) of an error that says a service behind the host failed, else None."""
    for cls, upstream in _UPSTREAMS:
        if isinstance(error, cls):
            if not upstream:
                return None
            if isinstance(error, errors.DatabaseError):
                # The SQLSTATE tells a constraint (23505) from an outage; none means no answer came.
                pg_code = error.pg_code or ""
                return upstream, f"sqlstate_{pg_code}" if _SQLSTATE.match(pg_code) else "unreachable"
            return upstream, error.code if _CODE.match(error.code) else "OTHER"
    return None


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class FunctionsMetrics:
    """The host's counters; `function` labels are limited to `names`, any other path counts as "unknown"."""

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(names)
        self.registry = CollectorRegistry()
        self.requests = Counter("functions_requests_total", "Requests answered, by function, method and status class",
                                ["function", "method", "status_class"], registry=self.registry)
        self.seconds = Histogram("functions_request_seconds", "Time to answer a request, by function",
                                 ["function"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.upstream_errors = Counter(
            "functions_upstream_errors_total",
            "Failures of the services behind the functions (crm_server, wappi, storage, database; provider: either "
            "messaging provider), by kind (a contract error code; the database's SQLSTATE or unreachable)",
            ["upstream", "kind"], registry=self.registry)

    def function_label(self, name: str) -> str:
        return name if name in self._names else UNKNOWN_FUNCTION

    def observe_request(self, name: str, method: str, status: int, seconds: float) -> None:
        function = self.function_label(name)
        self.requests.labels(function, method, status_class(status)).inc()
        self.seconds.labels(function).observe(seconds)

    def observe_error(self, error: FunctionError) -> None:
        found = upstream_of(error)
        if found is not None:
            self.upstream_errors.labels(*found).inc()

    @contextlib.contextmanager
    def counting_upstream_errors(self) -> Iterator[None]:
        """Every upstream error made while a request is handled is counted, also those a function handles itself
        (a failover, a retried store): the answer alone would hide them."""
        with observing_errors(self.observe_error):
            yield

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsEndpoint:
    """`GET /metrics` with `Authorization: Bearer <FUNCTIONS_METRICS_KEY>` (Prometheus' `authorization` scrape
    setting); the host does not route it at all without a key."""

    def __init__(self, metrics: FunctionsMetrics, key: str) -> None:
        self._metrics = metrics
        self._key = key.encode()

    async def endpoint(self, request: Request) -> Response:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Constant time: the comparison must not tell a scraper how much of a guess was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._key):
            return error_response(MetricsKeyError(), headers={"WWW-Authenticate": "Bearer"})
        return Response(self._metrics.render(), media_type=CONTENT_TYPE_LATEST)
