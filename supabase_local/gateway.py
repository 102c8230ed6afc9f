"""Supabase's API gateway rule in front of `/rest/v1`, `/auth/v1` and `/storage/v1`: the `apikey` must be one of the
project's keys, else 401 with the gateway's own JSON, before the service behind it sees the request.

Hosted Supabase's gateway (Kong) checks this; the local stack checks it too, so code that forgets the key fails here
and not first in production. `require_api_key(app, keys)` wraps any ASGI app; `create_api_app` wraps the prefixes.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

# The prefixes hosted Supabase guards with the project key (functions are guarded by their own JWT check).
GATED_PREFIXES = ("/rest/v1", "/auth/v1", "/storage/v1")

# Capability URLs open without a key, as on hosted Supabase: the bucket being public or the token in the URL is the
# authorization, and they must work from an `<img src>` or a plain GET (crm_server downloads chat media from
# signed URLs). Per prefix: (methods, path prefix relative to the mount).
OPEN_ROUTES: dict[str, tuple[tuple[frozenset[str], str], ...]] = {
    "/storage/v1": ((frozenset({"GET", "HEAD"}), "/object/public/"),
                    (frozenset({"GET", "HEAD"}), "/object/sign/"),
                    (frozenset({"PUT"}), "/object/upload/sign/")),
}

# Word for word what the hosted gateway answers.
MISSING_KEY = {"message": "No API key found in request", "hint": "No `apikey` request header or url param was found."}
INVALID_KEY = {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}


def presented_key(scope: Scope) -> str | None:
    """The `apikey` header, else the `?apikey=` parameter (browsers cannot set headers on every request)."""
    for name, value in scope.get("headers", ()):
        if name == b"apikey":
            return value.decode("latin-1").strip()
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("apikey")
    return values[0].strip() if values else None


def _mounted_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path and moves the prefix into `root_path`)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class ApiKeyGate:
    """ASGI middleware: lets a request through only with one of `keys`; CORS preflights pass (they carry no key,
    and the hosted gateway answers them before its key check), and so do the `open_routes`."""

    def __init__(self, app: ASGIApp, keys: Iterable[str],
                 open_routes: Iterable[tuple[frozenset[str], str]] = ()) -> None:
        self.app = app
        self._keys = [key.encode() for key in keys if key]
        self._open_routes = tuple(open_routes)
        if not self._keys:
            raise ValueError("ApiKeyGate needs at least one key: an empty list would refuse every request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "OPTIONS" or self._is_open(scope):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        if not key:
            await _refuse(send, MISSING_KEY)
        elif not self._known(key.encode("latin-1", "replace")):
            await _refuse(send, INVALID_KEY)
        else:
            await self.app(scope, receive, send)

    def _is_open(self, scope: Scope) -> bool:
        path = _mounted_path(scope)
        # ".." never reaches here as a segment that could climb out of the open prefix: the apps below refuse it.
        return any(scope.get("method") in methods and path.startswith(prefix)
                   for methods, prefix in self._open_routes)

    def _known(self, key: bytes) -> bool:
        # Every key compared, in constant time: neither the match nor its position leaks through timing.
        matched = False
        for candidate in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched


def require_api_key(app: ASGIApp, keys: Iterable[str], prefix: str | None = None) -> ASGIApp:
    """`app` behind the key check; `prefix` (e.g. "/storage/v1") names the mount whose OPEN_ROUTES stay open."""
    return ApiKeyGate(app, keys, OPEN_ROUTES.get(prefix or "", ()))


async def _refuse(send: Send, body: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        # A browser must be able to read the refusal, as it reads every other answer of these services.
        (b"access-control-allow-origin", b"*")]})
    await send({"type": "http.response.body", "body": payload})
