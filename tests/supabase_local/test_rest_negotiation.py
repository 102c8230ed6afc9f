"""Accept and Prefer as the gateway reads them, including its memory of short ones: a remembered parse answers the
same as a fresh one, a refusal is never remembered, and a long value is parsed each time."""

from __future__ import annotations

import pytest

from supabase_local.rest.errors import RestError
from supabase_local.rest.negotiation import MEMO_MAX_CHARS, Preferences, Representation, negotiate


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
