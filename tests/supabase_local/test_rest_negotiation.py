"""Accept and Prefer as the gateway reads them, including its memory of short ones: a remembered parse answers the
same as a fresh one, a refusal is never remembered, and a long value is parsed each time; and a request's headers
and query string as RequestHead reads them, which must be what Starlette's `Headers` and `parse_qsl` read."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from starlette.datastructures import Headers

from supabase_local.rest.errors import RestError
from supabase_local.rest.negotiation import (
    MEMO_MAX_CHARS,
    Preferences,
    Representation,
    RequestHead,
    negotiate,
    query_pairs,
)

QUERY_STRINGS = [
    "", "&", "a", "a=", "=b", "a=b=c", "a=1&&b=2&", "a;b=c", "a+b=c+d", "%41=%42", "x=%zz", "x=%E2%82%AC",
    "x=%ff%fe", "sel%2Bect=id%2Cname", "x=%2B+%20", "select=id%2Cname%2Cphone&id=eq.7d9c0c8e",
    "or=(a.eq.1%2Cb.eq.2)&order=name.desc", "x=" + "%41" * MEMO_MAX_CHARS, "%41" * MEMO_MAX_CHARS + "=1",
    "in=in.(%22a%2Cb%22,c)", "name=like.*%25*", "x=caf%C3%A9&x=%C3",
]


def test_a_refused_accept_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(RestError) as refused:
            negotiate("text/csv")
        assert (refused.value.status, refused.value.code) == (406, "PGRST107")


def test_each_accept_gets_its_own_representation() -> None:
    assert negotiate("application/vnd.pgrst.object+json") == Representation(singular=True)
    assert negotiate("application/json") == Representation()
    assert negotiate("application/json;nulls=stripped") == Representation(strip_nulls=True)
    assert negotiate("application/vnd.pgrst.object+json") == Representation(singular=True)


def test_each_prefer_combination_gets_its_own_preferences() -> None:
    representation = Preferences.parse(["return=representation"])
    counted = Preferences.parse(["return=representation", "count=exact"])
    assert representation.representation and not representation.count
    assert counted.representation and counted.count and counted.applied == ("return=representation", "count=exact")
    assert Preferences.parse([]) == Preferences()


def test_a_long_header_is_parsed_like_a_short_one() -> None:
    padding = "x" * MEMO_MAX_CHARS
    assert Preferences.parse([f"return=minimal, ignored={padding}"]).applied == ("return=minimal",)
    assert negotiate(f"application/json;q=1;p={padding}") == Representation()


@pytest.mark.parametrize("text", QUERY_STRINGS)
def test_query_pairs_are_parse_qsl_s(text: str) -> None:
    for _ in range(2):  # the second time from the memo of decoded pieces
        assert query_pairs(text) == parse_qsl(text, keep_blank_values=True)


def test_a_repeated_header_is_read_by_its_first_value_and_every_prefer_is_kept() -> None:
    raw = [(b"accept", b"application/json"), (b"prefer", b"return=representation"), (b"x-a", b"1"),
           (b"accept", b"text/csv"), (b"prefer", b"count=exact"), (b"x-a", b"2")]
    head = RequestHead.of({"headers": raw, "query_string": b"select=id&id=eq.1"})
    starlette = Headers(raw=raw)
    assert head.headers == {name: starlette[name] for name in ("accept", "prefer", "x-a")}
    assert head.prefer == ("return=representation", "count=exact")
    assert head.query == [("select", "id"), ("id", "eq.1")]
    assert RequestHead.of({"headers": [(b"accept", b"*/*")]}).prefer == ()
