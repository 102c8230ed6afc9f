"""What a request asks for beyond its URL (Prefer, Accept, profiles, Range, the JSON body) and how answers are framed.

PostgREST's header semantics live here: `Prefer: return=/count=/resolution=/missing=/max-affected=`, singular
objects, `Content-Range`, and the 200/206/416 decision for reads.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.types import Scope

from safeguards.request_body import BodyTooLarge, read_body
from supabase_local.rest.catalog import SCHEMA
from supabase_local.rest.errors import RestError, bad_body, payload_too_large
from supabase_local.rest.query import Query

JSON_MEDIA = "application/json; charset=utf-8"
OBJECT_MEDIA = "application/vnd.pgrst.object+json; charset=utf-8"
# The longest header value whose parse is kept (at most 256 of each), so the memos stay small whatever is sent.
MEMO_MAX_CHARS = 200
_RANGE = re.compile(r"\s*(?:items=)?(\d+)-(\d*)\s*")


@dataclass(frozen=True)
class RequestHead:
    """A request's headers and query string, read once from the ASGI scope for everything the endpoint asks.

    Starlette's `Headers` scans the raw list and re-encodes the name on each lookup; an endpoint asks for eight
    names, and `QueryParams` copies its pairs twice more. Measured in-process on the bench's select by primary key
    (database call taken out, min of 5 × 3,000): the app's CPU per request went from 0.069 to 0.061 ms.
    """

    headers: Mapping[str, str]  # each header's first value, as Starlette's `Headers.get` answers; names lowercase
    prefer: tuple[str, ...]  # every `Prefer` header, in order
    query: list[tuple[str, str]]  # the query string's pairs in order, blank values kept

    @classmethod
    def of(cls, scope: Scope) -> RequestHead:
        # ASGI servers give names lowercased (the spec asks them to), as Starlette's lookups assume too. Read in
        # reverse, a repeated name keeps its first value, as `Headers.get` answers. One comprehension instead of a
        # loop of setdefault and a Prefer check per header, and `query_pairs` for `parse_qsl`: RequestHead.of went
        # from 5.2 to 2.6 µs for supabase-py's select (ten headers, two query parameters; min of 5 × 100,000).
        raw = scope["headers"]
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(raw)}
        prefer = tuple(value.decode("latin-1") for name, value in raw if name == b"prefer") if "prefer" in headers else ()
        return cls(headers, prefer, query_pairs(scope.get("query_string", b"").decode("latin-1")))

    def query_value(self, name: str) -> str | None:
        """The last value of a query parameter, as Starlette's `QueryParams.get` answers."""
        found = None
        for key, value in self.query:
            if key == name:
                found = value
        return found


def query_pairs(text: str) -> list[tuple[str, str]]:
    """`urllib.parse.parse_qsl(text, keep_blank_values=True)`, pair for pair: split at `&`, empty pieces skipped, a
    piece without `=` an empty value, `+` a space, percent-escapes decoded as UTF-8 (undecodable bytes replaced);
    only a name or value that has a `+` or `%` is rewritten, and a short escaped one is decoded once (`select=`
    lists repeat from request to request; values such as ids mostly need no decoding)."""
    pairs: list[tuple[str, str]] = []
    for piece in text.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = _unquoted(name) if len(name) <= MEMO_MAX_CHARS else unquote(name, errors="replace")
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            value = _unquoted(value) if len(value) <= MEMO_MAX_CHARS else unquote(value, errors="replace")
        pairs.append((name, value))
    return pairs


@functools.lru_cache(maxsize=256)
def _unquoted(text: str) -> str:
    return unquote(text, errors="replace")


@dataclass(frozen=True)
class Preferences:
    """The `Prefer` header, as far as this gateway honours it; `applied` is echoed in Preference-Applied."""

    return_: str | None = None  # representation | minimal | headers-only; None is PostgREST's default, minimal
    count: bool = False
    resolution: str | None = None  # merge-duplicates | ignore-duplicates
    missing_default: bool = False
    max_affected: int | None = None  # only together with handling=strict
    applied: tuple[str, ...] = ()

    @classmethod
    def parse(cls, values: Sequence[str]) -> Preferences:
        # Clients send a handful of distinct Prefer headers (supabase-py: none, or a return=/count= pair), so the
        # parse of each short combination is kept, a bounded number of them (Preferences is frozen).
        key = tuple(values)
        return _parsed_preferences(key) if sum(map(len, key)) <= MEMO_MAX_CHARS else cls._parse(key)

    @classmethod
    def _parse(cls, values: Sequence[str]) -> Preferences:
        found: dict[str, str] = {}
        for value in values:
            for item in value.split(","):
                key, _, setting = item.strip().partition("=")
                found[key.strip().lower()] = setting.strip().lower()
        applied: list[str] = []
        return_ = found.get("return")
        if return_ in ("representation", "minimal", "headers-only"):
            applied.append(f"return={return_}")
        else:
            return_ = None
        # planned and estimated counts are exact here: local tables are small enough to count.
        count = found.get("count") in ("exact", "planned", "estimated")
        if count:
            applied.append(f"count={found['count']}")
        resolution = found.get("resolution")
        if resolution in ("merge-duplicates", "ignore-duplicates"):
            applied.append(f"resolution={resolution}")
        else:
            resolution = None
        missing_default = found.get("missing") == "default"
        if missing_default:
            applied.append("missing=default")
        max_affected = None
        if found.get("handling") == "strict" and found.get("max-affected", "").isdigit():
            max_affected = int(found["max-affected"])
            applied += ["handling=strict", f"max-affected={max_affected}"]
        return cls(return_, count, resolution, missing_default, max_affected, tuple(applied))

    @property
    def representation(self) -> bool:
        return self.return_ == "representation"


@dataclass(frozen=True)
class Representation:
    """How rows are written back: an array, or (Accept: application/vnd.pgrst.object+json) exactly one object."""

    singular: bool = False
    strip_nulls: bool = False

    @property
    def media_type(self) -> str:
        return OBJECT_MEDIA if self.singular else JSON_MEDIA


@functools.lru_cache(maxsize=256)
def _parsed_preferences(values: tuple[str, ...]) -> Preferences:
    return Preferences._parse(values)


def negotiate(accept: str | None) -> Representation:
    # As with Prefer, a client sends one or two Accept values: each short one is negotiated once (a 406 is not kept:
    # lru_cache keeps no exceptions). With the Prefer memo, the app's CPU per select by primary key went from
    # 0.040 to 0.037 ms (in-process, database call taken out, min of 5 × 3,000, three of four alternating pairs).
    if accept is None or len(accept) <= MEMO_MAX_CHARS:
        return _negotiated(accept)
    return _negotiate(accept)


@functools.lru_cache(maxsize=256)
def _negotiated(accept: str | None) -> Representation:
    return _negotiate(accept)


def _negotiate(accept: str | None) -> Representation:
    if not accept:
        return Representation()
    for media_range in accept.split(","):
        media_type, *parameters = (part.strip().lower() for part in media_range.split(";"))
        strip = "nulls=stripped" in parameters
        if media_type in ("application/vnd.pgrst.object+json", "application/vnd.pgrst.object"):
            return Representation(True, strip)
        if media_type in ("application/json", "application/vnd.pgrst.array+json", "application/vnd.pgrst.array",
                          "*/*", "application/*", ""):
            return Representation(False, strip)
    raise RestError(406, "PGRST107", f"None of these media types are available: {accept}")


def check_profile(headers: Mapping[str, str]) -> None:
    """supabase-py names the schema in Accept-Profile and Content-Profile; only `public` is exposed."""
    for header in ("accept-profile", "content-profile"):
        profile = headers.get(header)
        if profile and profile != SCHEMA:
            raise RestError(406, "PGRST106", f"The schema must be one of the following: {SCHEMA}")


def apply_range_header(headers: Mapping[str, str], query: Query) -> None:
    """`Range: 0-9` pages too; `limit` and `offset` in the query string win."""
    match = _RANGE.fullmatch(headers.get("range", ""))
    if match is None:
        return
    first = int(match.group(1))
    if query.offset is None:
        query.offset = first
    if match.group(2) and query.limit is None:
        last = int(match.group(2))
        if last < first:
            raise RestError(416, "PGRST103", "Requested range not satisfiable")
        query.limit = last - first + 1


async def read_json(request: Request, limit: int, empty: object = None) -> tuple[Any, str]:
    """The body parsed (to learn its keys) and as text, which is bound as sent: PostgreSQL converts the values.

    At most `limit` bytes: a larger declared length is refused before any of the body is read, a chunked body as
    soon as it passes the limit."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", "application/vnd.pgrst.object+json", ""):
        raise RestError(415, "PGRST107", f"The Content-Type {content_type!r} is not supported, send JSON")
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge as exc:
        raise payload_too_large(exc.limit) from None
    if not raw.strip():
        if empty is not None:
            return empty, json.dumps(empty)
        raise bad_body("Empty or invalid json")
    try:
        text = raw.decode("utf-8")
        return json.loads(text), text
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's recursion limit is refused like any bad JSON.
        raise bad_body("Empty or invalid json") from exc


def content_range(offset: int, rows: int, total: int | None) -> str:
    span = f"{offset}-{offset + rows - 1}" if rows else "*"
    return f"{span}/{'*' if total is None else total}"


def read_status(offset: int, rows: int, total: int | None) -> int:
    """200, or 206 when a count shows the page is part of the result; an offset past the end is 416."""
    if total is None:
        return 200
    if offset > total:
        raise RestError(416, "PGRST103", "Requested range not satisfiable",
                        f"An offset of {offset} was requested, but there are only {total} rows.",
                        headers={"Content-Range": f"*/{total}"})
    return 206 if rows < total else 200


def singular_body(body: str) -> str:
    """The one row of a JSON array: json_agg of one row is exactly "[<row>]"."""
    return body[1:-1]
