"""Validation at the edge: requests and webhook payloads become models or a 4xx naming the field."""

from __future__ import annotations

import uuid

import pytest

from functions._shared.errors import MalformedBodyError, ValidationFailedError
from functions._shared.types import (
    ConnectRequest,
    SendRequest,
    WebhookPayload,
    idempotency_key,
    parse_json_object,
    validate_model,
)

ORG = str(uuid.uuid4())
LOCAL = {"allow_http_loopback": True}


def connect(**fields: object) -> dict[str, object]:
    return {"crmApiUrl": "https://crm.example.com", "crmApiKey": "key", "crmPhoneNumber": "+79990000001", **fields}


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


@pytest.mark.parametrize(("fields", "field"), [
    ({"crmApiUrl": "ftp://crm.example.com"}, "crmApiUrl"),
    ({"crmApiUrl": "http://crm.example.com"}, "crmApiUrl"),
    ({"crmApiUrl": "https://user:pw@crm.example.com"}, "crmApiUrl"),
    ({"crmApiKey": ""}, "crmApiKey"),
    ({"crmApiKey": "   "}, "crmApiKey"),
    ({"crmPhoneNumber": "12"}, "crmPhoneNumber"),
    ({"crmPhoneNumber": 79990000001}, "crmPhoneNumber"),
    ({"integrationId": "not-a-uuid"}, "integrationId"),
])
def test_bad_connect_fields_are_422_naming_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(ConnectRequest, connect(**fields), context=LOCAL)
    assert (caught.value.status_code, caught.value.field) == (422, field)


def test_a_missing_connect_field_is_named() -> None:
    body = connect()
    del body["crmApiKey"]
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(ConnectRequest, body)
    assert caught.value.field == "crmApiKey"
    assert "required" in caught.value.message


def test_http_is_allowed_only_to_loopback_and_only_when_enabled() -> None:
    assert validate_model(ConnectRequest, connect(crmApiUrl="http://127.0.0.1:8090/"), LOCAL).crmApiUrl == \
        "http://127.0.0.1:8090"
    assert validate_model(ConnectRequest, connect(crmApiUrl="http://localhost:8090"), LOCAL)
    with pytest.raises(ValidationFailedError):
        validate_model(ConnectRequest, connect(crmApiUrl="http://127.0.0.1:8090"), {"allow_http_loopback": False})
    with pytest.raises(ValidationFailedError):
        validate_model(ConnectRequest, connect(crmApiUrl="http://10.0.0.5:8090"), LOCAL)


def test_connect_phone_is_normalised() -> None:
    assert validate_model(ConnectRequest, connect(crmPhoneNumber="7 999 000 00 01")).crmPhoneNumber == "+79990000001"


def test_send_needs_text_or_file() -> None:
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(SendRequest, {"clientId": ORG, "text": "   "})
    assert caught.value.field == "text"
    assert validate_model(SendRequest, {"clientId": ORG, "fileUrl": "https://x.example/a.png"}).text is None


def test_send_text_longer_than_telegram_allows_is_refused() -> None:
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(SendRequest, {"clientId": ORG, "text": "x" * 4097})
    assert caught.value.field == "text"


def test_minimal_payload_of_the_original_plan_is_accepted() -> None:
    payload = validate_model(WebhookPayload, {"project_id": ORG, "account_phone": "79990000001", "from_id": 42,
                                              "from_username": "ivan", "text": "hi"})
    assert (payload.account_phone, payload.from_id, payload.message_id) == ("+79990000001", "42", None)
    assert payload.sender_display_name == "@ivan"


def test_full_payload_normalises_ids_and_phones() -> None:
    payload = validate_model(WebhookPayload, {
        "event_id": "evt", "project_id": ORG, "account_phone": "+79990000001", "from_id": "42",
        "from_username": "@ivan", "from_first_name": "Ivan", "from_phone": "7 999 123 45 67", "chat_id": 42,
        "message_id": 7, "text": "hi", "timestamp": "2026-01-02T03:04:05Z", "unknown_field": [1]})
    assert (payload.from_username, payload.from_phone, payload.chat_id, payload.message_id) == \
        ("ivan", "+79991234567", "42", "7")
    assert payload.timestamp is not None and payload.timestamp.tzinfo is not None


@pytest.mark.parametrize(("fields", "field"), [
    ({"project_id": "nope"}, "project_id"),
    ({"from_id": "abc"}, "from_id"),
    ({"from_id": True}, "from_id"),
    ({"account_phone": "x"}, "account_phone"),
    ({"text": None}, "text"),
    ({"text": 5}, "text"),
    ({"timestamp": "yesterday"}, "timestamp"),
])
def test_malformed_webhook_fields_are_named(fields: dict[str, object], field: str) -> None:
    body = {"project_id": ORG, "account_phone": "79990000001", "from_id": 1, "text": "hi", **fields}
    with pytest.raises(ValidationFailedError) as caught:
        validate_model(WebhookPayload, body)
    assert caught.value.field == field


def test_idempotency_key_is_passed_through_or_made() -> None:
    assert idempotency_key({"idempotency-key": "abc-1"}) == "abc-1"
    made = idempotency_key({})
    assert uuid.UUID(made) and made != idempotency_key({})
    with pytest.raises(ValidationFailedError) as caught:
        idempotency_key({"idempotency-key": "x" * 201})
    assert caught.value.field == "Idempotency-Key"
