"""The query string's size limits: a logic tree nested too deep or a select too wide is a 400 `PGRST100`, answered
before any SQL, never a 500; a query at the limits is served as any other."""

from __future__ import annotations

import logging

import httpx
import pytest

from supabase_local.keys import LocalKeys
from supabase_local.rest.errors import RestError
from supabase_local.rest.query import MAX_LOGIC_DEPTH, MAX_SELECT_ITEMS, parse_logic, parse_select


def nested(depth: int, innermost: str = "id.is.null", conjunction: str = "or") -> str:
    """A logic tree `depth` levels deep: depth 1 is `(id.is.null)`, the value of `or=`."""
    return "(" + f"{conjunction}(" * (depth - 1) + innermost + ")" * (depth - 1) + ")"


@pytest.fixture
async def rest(api_server: str, local_keys: LocalKeys, caplog: pytest.LogCaptureFixture) -> httpx.AsyncClient:
    caplog.set_level(logging.ERROR, logger="supabase_local.rest")
    key = local_keys.service_role_key
    async with httpx.AsyncClient(base_url=f"{api_server}/rest/v1", timeout=30,
                                 headers={"apikey": key, "Authorization": f"Bearer {key}"}) as http:
        yield http
    # A refused query is the client's mistake: nothing reaches the error log, no traceback anywhere.
    assert not [record for record in caplog.records if record.name.startswith("supabase_local.rest")]


def assert_pgrst100(response: httpx.Response, mentions: str) -> None:
    assert response.status_code == 400, response.text[:300]
    body = response.json()
    assert sorted(body) == ["code", "details", "hint", "message"]
    assert body["code"] == "PGRST100" and mentions in body["message"], body


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_logic_tree_nested_900_deep_is_pgrst100(rest: httpx.AsyncClient, method: str) -> None:
    response = await rest.request(method, "/chat_messages", params={"select": "id", "or": nested(900)})
    assert_pgrst100(response, "nested")


async def test_a_logic_tree_one_level_past_the_limit_is_pgrst100(rest: httpx.AsyncClient) -> None:
    response = await rest.get("/chat_messages", params={"select": "id",
                                                        "not.and": nested(MAX_LOGIC_DEPTH + 1, conjunction="and")})
    assert_pgrst100(response, str(MAX_LOGIC_DEPTH))


async def test_a_logic_tree_at_the_limit_is_served(rest: httpx.AsyncClient) -> None:
    response = await rest.get("/chat_messages", params={
        "select": "id", "or": nested(MAX_LOGIC_DEPTH, innermost="id.in.(00000000-0000-4000-8000-000000000000)")})
    assert response.status_code == 200, response.text[:300]


async def test_a_select_of_5000_items_is_pgrst100(rest: httpx.AsyncClient) -> None:
    response = await rest.get("/chat_messages", params={"select": ",".join(["id"] * 5000)})
    assert_pgrst100(response, str(MAX_SELECT_ITEMS))


async def test_a_select_at_the_limit_is_served(rest: httpx.AsyncClient) -> None:
    response = await rest.get("/chat_messages", params={"select": ",".join(["id"] * MAX_SELECT_ITEMS)})
    assert response.status_code == 200, response.text[:300]


async def test_stars_count_as_every_column_of_the_table(rest: httpx.AsyncClient) -> None:
    # 100 items, but each `*` is all of chat_messages' columns: more than PostgreSQL returns in one row.
    response = await rest.get("/chat_messages", params={"select": ",".join(["*"] * 100)})
    assert_pgrst100(response, "columns")


async def test_a_write_returning_a_select_past_the_limit_is_refused_before_writing(rest: httpx.AsyncClient) -> None:
    response = await rest.patch("/chat_messages", params={"id": "is.null", "select": ",".join(["id"] * 5000)},
                                headers={"Prefer": "return=representation"}, json={"is_read": True})
    assert_pgrst100(response, str(MAX_SELECT_ITEMS))


def test_the_parser_refuses_a_tree_past_the_limit_without_recursing_into_it() -> None:
    with pytest.raises(RestError) as raised:
        parse_logic("or", nested(10_000))
    assert (raised.value.status, raised.value.code) == (400, "PGRST100")


def test_the_parser_refuses_a_select_past_the_limit() -> None:
    with pytest.raises(RestError) as raised:
        parse_select(",".join(["id"] * (MAX_SELECT_ITEMS + 1)))
    assert (raised.value.status, raised.value.code) == (400, "PGRST100")
