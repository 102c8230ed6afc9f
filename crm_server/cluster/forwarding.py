"""Requests about an account another instance holds go to that instance: signed, one hop, answered as it answers.

Who serves an account's request is decided here, before a route acts: this instance when it runs the account, when
nobody holds its lease (it then takes it), or when the request was forwarded to it (never forwarded again); else the
holder, by the URL it registered (crm_server.store.instances). A holder that does not answer counts as gone only
once its lease expires: until then the caller gets 503 with Retry-After.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import httpx
from starlette.requests import Request
from starlette.responses import Response

from crm_server import errors
from crm_server.cluster.signing import FORWARDED_BY_HEADER, SIGNATURE_HEADER, SignatureVerifier, sign
from crm_server.media.files import CountingFile
from crm_server.metrics import ServerMetrics
from crm_server.store import Store
from crm_server.store.accounts import LeaseHolder
from crm_server.webhooks.media_source import MediaTransient, MediaUnavailable

log = logging.getLogger(__name__)

# The caller's headers the owner needs: its key (checked again there, against the same store), the idempotency key,
# and the body's type. Nothing else of the caller's request is trusted or needed.
FORWARDED_REQUEST_HEADERS = ("x-api-key", "idempotency-key", "content-type", "accept", "range")
# The owner's answer headers the caller must see; hop-by-hop and framing headers are the local server's.
FORWARDED_RESPONSE_HEADERS = ("content-type", "retry-after", "idempotent-replayed", "content-disposition", "etag",
                              "cache-control", "content-security-policy", "x-content-type-options", "accept-ranges",
                              "content-range", "last-modified")
# A send may upload a file fetched first; the owner's own limits answer before this.
FORWARD_TIMEOUT_SECONDS = 120.0


class Forwarder:
    def __init__(self, store: Store, *, instance_id: str, secret: str, runs_here: Callable[[str, str], bool],
                 metrics: ServerMetrics, client: httpx.AsyncClient | None = None) -> None:
        self._store = store
        self._instance_id = instance_id
        self._secret = secret
        self._runs_here = runs_here
        self._metrics = metrics
        self._verifier = SignatureVerifier(secret)
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(FORWARD_TIMEOUT_SECONDS, connect=2.0),
                                                   follow_redirects=False)

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    async def close(self) -> None:
        await self._client.aclose()

    def check_forwarded(self, request: Request) -> bool:
        """True when `request` was forwarded by another instance (serve it here); ClusterSignatureInvalidError when it
        says so without a valid signature: that claim is what stops a second hop, so it is never taken on trust."""
        if SIGNATURE_HEADER not in request.headers and FORWARDED_BY_HEADER not in request.headers:
            return False
        body = getattr(request.state, "raw_body", b"")
        if not self._verifier.verify(request.method, _target(request), body, request.headers):
            raise errors.ClusterSignatureInvalidError()
        return True

    async def elsewhere(self, request: Request, project_id: str, phone: str) -> Response | None:
        """The holder's answer when another live instance holds (project_id, phone); None: serve it here."""
        if self.check_forwarded(request) or not self.enabled or self._runs_here(project_id, phone):
            return None
        return await self._to_holder(request, await self._store.accounts.holder(project_id, phone))

    async def elsewhere_by_phone(self, request: Request, phone: str) -> Response | None:
        """As `elsewhere`, for the sandbox routes that name only an `account_phone`."""
        if self.check_forwarded(request) or not self.enabled:
            return None
        holder = await self._store.accounts.holder(None, phone)
        if holder is None or self._runs_here(holder.project_id, phone):
            return None
        return await self._to_holder(request, holder)

    async def qr_elsewhere(self, request: Request, login_id: str, here: Callable[[str], bool]) -> Response | None:
        """The answer of the instance whose process runs QR login `login_id`, when it is another one."""
        if self.check_forwarded(request) or not self.enabled or here(login_id):
            return None
        return await self.to_instance(request, await self._store.qr_logins.instance_of(login_id), checked=True)

    async def to_instance(self, request: Request, instance_id: str | None, *, checked: bool = False) -> Response | None:
        """The answer of `instance_id` to `request` (a media file on its disk); None when it is this one or unknown."""
        if not checked and self.check_forwarded(request):
            return None
        if not self.enabled or instance_id in (None, self._instance_id):
            return None
        instance = await self._store.instances.get(instance_id)
        if instance is None:
            return None
        return await self._forward(request, instance.url, retry_after=None)

    async def fetch_media(self, path: str, body: bytes, into: CountingFile) -> None:
        """An incoming file downloaded by the instance holding its account (`body` names the account and message),
        streamed into `into`; MediaTransient when no live instance can now, MediaUnavailable when Telegram said no."""
        document = json.loads(body)
        holder = await self._store.accounts.holder(document["project_id"], document["phone"])
        if holder is None or not holder.other_than(self._instance_id, time.time()) or holder.url is None:
            raise MediaTransient("no instance runs the account")
        headers = {"content-type": "application/json", **sign(self._secret, "POST", path, body),
                   FORWARDED_BY_HEADER: self._instance_id}
        try:
            async with self._client.stream("POST", holder.url + path, content=body, headers=headers) as answer:
                if answer.status_code == 404:
                    raise MediaUnavailable("the holder cannot get the file")
                if answer.status_code != 200:
                    raise MediaTransient(f"the holder answered {answer.status_code}")
                async for chunk in answer.aiter_bytes():
                    into.write(chunk)
        except httpx.TransportError as exc:
            self._metrics.forwards.labels(path, "unreachable").inc()
            raise MediaTransient(type(exc).__name__) from None
        self._metrics.forwards.labels(path, "answered").inc()

    async def _to_holder(self, request: Request, holder: LeaseHolder | None) -> Response | None:
        now = time.time()
        if holder is None or not holder.other_than(self._instance_id, now):
            return None  # nobody holds it (the route takes the lease) or we do
        if holder.url is None:
            return None  # a holder that never registered (an older server): the route answers as before
        assert holder.expires_at is not None
        return await self._forward(request, holder.url, retry_after=holder.expires_at - now)

    async def _forward(self, request: Request, base_url: str, *, retry_after: float | None) -> Response:
        route = _route_label(request)
        target = _target(request)
        body = getattr(request.state, "raw_body", b"") if request.method in ("POST", "PUT", "PATCH") else b""
        headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
        headers.update(sign(self._secret, request.method, target, body))
        headers[FORWARDED_BY_HEADER] = self._instance_id
        try:
            answer = await self._client.request(request.method, base_url + target, content=body, headers=headers)
        except httpx.TransportError as exc:
            self._metrics.forwards.labels(route, "unreachable").inc()
            log.warning("forward of %s to %s failed (%s)", route, base_url, type(exc).__name__)
            raise errors.HolderUnreachableError(retry_after=max(retry_after or 1.0, 1.0)) from None
        self._metrics.forwards.labels(route, "answered").inc()
        kept = {name: answer.headers[name] for name in FORWARDED_RESPONSE_HEADERS if name in answer.headers}
        return Response(answer.content, status_code=answer.status_code, headers=kept)


def _target(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _route_label(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", request.url.path)
