"""Parsing at the edge: a body is a JSON object or a 400, and the Idempotency-Key is the caller's or a fresh one."""

from __future__ import annotations

import uuid

import pytest

from functions._shared.errors import MalformedBodyError, ValidationFailedError
from functions._shared.parsing import idempotency_key, parse_json_object


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_400(body: bytes) -> None:
    with pytest.raises(MalformedBodyError) as caught:
        parse_json_object(body)
    assert caught.value.status_code == 400


def test_json_nested_deeper_than_the_parser_allows_is_400() -> None:
    # Found by the reliability fuzzer: json.loads raised RecursionError, which became a 500.
    with pytest.raises(MalformedBodyError):
        parse_json_object(b'{"a":' * 5000 + b"1" + b"}" * 5000)


def test_nul_characters_are_dropped_from_every_string_of_a_body() -> None:
    # PostgreSQL text cannot hold U+0000; found by the reliability fuzzer as database errors after the work.
    assert parse_json_object(b'{"te\\u0000xt": "a\\u0000b", "list": ["\\u0000", {"x": "y\\u0000"}]}') == {
        "text": "ab", "list": ["", {"x": "y"}]}


def test_idempotency_key_is_passed_through_or_made() -> None:
    assert idempotency_key({"idempotency-key": "abc-1"}) == "abc-1"
    made = idempotency_key({})
    assert uuid.UUID(made) and made != idempotency_key({})
    with pytest.raises(ValidationFailedError) as caught:
        idempotency_key({"idempotency-key": "x" * 201})
    assert caught.value.field == "Idempotency-Key"
