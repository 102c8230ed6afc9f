"""Malformed input on every route gets a 4xx in the contract's error shape naming the field at fault.

Hypothesis starts from a valid request, breaks exactly one field (drops it, gives it a wrong type, or an
out-of-range value), and checks the answer names that field; bodies that are not JSON objects name `body`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings, strategies as st

from crm_server.routes.parsing import MAX_BODY_BYTES
from tests.crm_server.server_process import CrmClient, CrmServerProcess
from tests.helpers.net import answer_to_head, status_of

PHONE = "+15550001234"

WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
NOT_A_STRING = st.one_of(WRONG_TYPES, st.integers())
BAD_PHONES = st.one_of(
    NOT_A_STRING,
    st.sampled_from(["", "+", "phone", "+12", "+1234567890123456789", "12ab34567", "++15550001234"]),
)
BAD_PROJECT_IDS = st.one_of(NOT_A_STRING, st.sampled_from(["", " ", "a b", "-lead", "x" * 129, "proj/a", "é"]))


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    valid: dict[str, Any]
    # field -> strategy of values that must be refused; `required` fields are also tried missing.
    invalid: dict[str, st.SearchStrategy[Any]]
    required: tuple[str, ...]
    where: str = "body"  # body | query
    path_fields: tuple[str, ...] = field(default_factory=tuple)


ROUTES = [
    Route(
        "POST", "/integration/lovable/connect",
        {"project_id": "p", "phone": PHONE, "webhook_url": "https://93.184.216.34/h", "secret": "s" * 16},
        {
            "project_id": BAD_PROJECT_IDS,
            "phone": BAD_PHONES,
            "webhook_url": st.one_of(
                NOT_A_STRING,
                st.sampled_from(["", "not a url", "ftp://93.184.216.34/x", "http://127.0.0.1/x", "https://"]),
            ),
            "secret": st.one_of(WRONG_TYPES.filter(lambda v: v is not None), st.integers(), st.just("short")),
        },
        ("project_id", "phone", "webhook_url"),
    ),
    Route(
        "POST", "/telegram/send",
        {"project_id": "p", "phone": PHONE, "to": "@alice", "text": "hi", "reply_to": 1},
        {
            "project_id": BAD_PROJECT_IDS,
            "phone": BAD_PHONES,
            "to": st.one_of(WRONG_TYPES, st.just(0), st.sampled_from(["", "@", "@a", "a b", "+1", "@bad-name"])),
            "text": st.one_of(
                WRONG_TYPES.filter(lambda v: v is not None), st.integers(), st.sampled_from(["", "   ", "x" * 4097])
            ),
            "reply_to": st.one_of(
                WRONG_TYPES.filter(lambda v: v is not None), st.integers(max_value=0), st.just("5")
            ),
            "file_url": st.one_of(st.integers(), st.sampled_from(["", "file:///etc/passwd", "nope"])),
        },
        ("project_id", "phone", "to"),
    ),
    Route(
        "POST", "/telegram/auth/send-code", {"project_id": "p", "phone": PHONE},
        {"project_id": BAD_PROJECT_IDS, "phone": BAD_PHONES}, ("project_id", "phone"),
    ),
    Route(
        "POST", "/telegram/auth/sign-in", {"project_id": "p", "phone": PHONE, "code": "12345"},
        {
            "project_id": BAD_PROJECT_IDS,
            "phone": BAD_PHONES,
            "code": st.one_of(NOT_A_STRING, st.sampled_from(["", "12", "abcde", "1234567890123"])),
        },
        ("project_id", "phone", "code"),
    ),
    Route(
        "POST", "/telegram/auth/password", {"project_id": "p", "phone": PHONE, "password": "pw"},
        {
            "project_id": BAD_PROJECT_IDS,
            "phone": BAD_PHONES,
            "password": st.one_of(NOT_A_STRING, st.just(""), st.just("x" * 1025)),
        },
        ("project_id", "phone", "password"),
    ),
    Route(
        "GET", "/telegram/status", {"project_id": "p", "phone": PHONE},
        {"project_id": st.sampled_from(["", "a b", "x" * 129]), "phone": st.sampled_from(["", "abc", "+12"])},
        ("project_id",), where="query",
    ),
    Route(
        "DELETE", "/telegram/accounts/{phone}", {"project_id": "p", "phone": PHONE},
        {"project_id": st.sampled_from(["", "a b", "x" * 129]), "phone": st.sampled_from(["abc", "+12", "1-2"])},
        ("project_id",), where="query", path_fields=("phone",),
    ),
    Route(
        "POST", "/sandbox/users", {"phone": PHONE, "username": "alice_1", "privacy_restricted": False},
        {
            "phone": BAD_PHONES,
            "username": st.one_of(st.integers(), st.sampled_from(["", "a", "1abc", "bad name"])),
            "privacy_restricted": st.one_of(st.integers(), st.sampled_from(["yes", "true"]),
                                            st.floats(allow_nan=False, allow_infinity=False)),
        },
        ("phone",),
    ),
    Route(
        "POST", "/sandbox/accounts", {"phone": PHONE, "password": "pw"},
        {"phone": BAD_PHONES, "password": st.one_of(st.integers(), st.just(""))}, ("phone",),
    ),
    Route(
        "POST", "/sandbox/incoming", {"account_phone": PHONE, "from": "@alice", "text": "hi"},
        {
            "account_phone": BAD_PHONES,
            "from": st.one_of(WRONG_TYPES, st.sampled_from(["", "@", "a b"])),
            "text": st.one_of(NOT_A_STRING, st.sampled_from(["", " ", "x" * 4097])),
        },
        ("account_phone", "from", "text"),
    ),
    Route(
        "GET", "/sandbox/sent", {"account_phone": PHONE},
        {"account_phone": st.sampled_from(["", "abc", "+12"])}, ("account_phone",), where="query",
    ),
    Route(
        "POST", "/sandbox/flood", {"account_phone": PHONE, "seconds": 5},
        {
            "account_phone": BAD_PHONES,
            "seconds": st.one_of(WRONG_TYPES, st.integers(max_value=0), st.integers(min_value=86401), st.just("5")),
        },
        ("account_phone", "seconds"),
    ),
    Route(
        "POST", "/sandbox/revoke", {"account_phone": PHONE},
        {"account_phone": BAD_PHONES}, ("account_phone",),
    ),
]


@st.composite
def broken_requests(draw: st.DrawFn) -> tuple[Route, dict[str, Any], str]:
    """A route, its valid request with exactly one field broken, and that field's name."""
    route = draw(st.sampled_from(ROUTES))
    name = draw(st.sampled_from(sorted(set(route.invalid) | set(route.required))))
    data = dict(route.valid)
    if name in route.required and (name not in route.invalid or draw(st.booleans())):
        data.pop(name, None)
    else:
        data[name] = draw(route.invalid[name])
    return route, data, name


def call(client: CrmClient, route: Route, data: dict[str, Any]) -> httpx.Response:
    path = route.path
    data = dict(data)
    for name in route.path_fields:
        path = path.replace("{" + name + "}", httpx.URL("/" + str(data.pop(name))).raw_path.decode()[1:])
    if route.where == "query":
        return client.http.request(route.method, path, params=data)
    return client.http.request(route.method, path, json=data)


def assert_error_naming(response: httpx.Response, field_name: str) -> None:
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"]
    assert body["code"] == "VALIDATION_ERROR", body
    assert body.get("field") == field_name, body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(broken=broken_requests())
def test_one_broken_field_gets_a_4xx_naming_that_field(admin: CrmClient, broken: tuple[Route, dict, str]) -> None:
    route, data, name = broken
    assert_error_naming(call(admin, route, data), name)


JSON_BODY_ROUTES = [route for route in ROUTES if route.where == "body"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(JSON_BODY_ROUTES),
    content=st.one_of(
        st.binary(max_size=40).filter(lambda b: not b.strip().startswith((b"{", b"[", b'"')) or b"\x00" in b),
        st.sampled_from([b"", b"   ", b"{", b'{"project_id": ', b"null", b"[]", b"[1, 2]", b'"text"', b"42", b"\xff\xfe"]),
    ),
)
def test_a_body_that_is_not_a_json_object_gets_400_naming_the_body(
    admin: CrmClient, route: Route, content: bytes
) -> None:
    response = admin.http.request(route.method, route.path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, (content, response.text)
    body = response.json()
    assert body["success"] is False and body["code"] == "VALIDATION_ERROR" and body["field"] == "body"


def test_json_nested_deeper_than_the_parser_allows_is_400_not_500(admin: CrmClient) -> None:
    # Found by the reliability fuzzer: json.loads raised RecursionError, which became a 500.
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    response = admin.post("/telegram/send", content=deep, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "body"


def test_a_body_over_64_kb_is_413_naming_the_body(admin: CrmClient) -> None:
    response = admin.post("/telegram/send", json={"project_id": "p", "phone": PHONE, "to": "@someone",
                                                  "text": "x" * MAX_BODY_BYTES})
    assert response.status_code == 413, response.text
    assert response.json() == {"success": False, "code": "PAYLOAD_TOO_LARGE", "field": "body",
                               "error": f"The request body is larger than {MAX_BODY_BYTES} bytes"}


def test_a_declared_body_over_64_kb_is_answered_before_it_is_sent(crm_server: CrmServerProcess) -> None:
    answer = answer_to_head(f"{crm_server.url}/telegram/send", "POST", {
        "X-API-Key": crm_server.admin_key or "", "Content-Type": "application/json",
        "Content-Length": str(50 * 1024 * 1024)})
    assert status_of(answer) == 413, answer[:300]


def test_a_bad_idempotency_key_is_named(admin: CrmClient) -> None:
    response = admin.post(
        "/telegram/send",
        json={"project_id": "p", "phone": PHONE, "to": "@alice", "text": "hi"},
        headers={"Idempotency-Key": "x" * 300},
    )
    assert_error_naming(response, "Idempotency-Key")


def test_send_without_text_or_file_names_text(admin: CrmClient) -> None:
    response = admin.post("/telegram/send", json={"project_id": "p", "phone": PHONE, "to": "@alice"})
    assert_error_naming(response, "text")


def test_unknown_fields_are_ignored(admin: CrmClient) -> None:
    response = admin.post(
        "/telegram/send",
        json={"project_id": "p", "phone": PHONE, "to": "@alice", "text": "hi", "surprise": {"x": 1}},
    )
    # Valid apart from the extra field: it gets as far as looking up the (unknown) account.
    assert response.status_code == 404 and response.json()["code"] == "ACCOUNT_NOT_FOUND"


def test_unknown_routes_and_methods_answer_in_the_error_shape(admin: CrmClient) -> None:
    missing = admin.get("/no/such/route")
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    wrong_method = admin.get("/telegram/send")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "METHOD_NOT_ALLOWED"
