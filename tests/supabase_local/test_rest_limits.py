"""The request's size limits: a logic tree nested too deep or a select too wide is a 400 `PGRST100`, answered
before any SQL, never a 500; a body over 1 MB is a 413 `PGRST413`, answered before it is read, and nothing of it is
stored; a request at the limits is served as any other."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from supabase_local.database import DatabaseUrls
from supabase_local.keys import LocalKeys
from supabase_local.rest.errors import RestError
from tests.helpers.net import answer_to_head, status_of
from supabase_local.rest.query import MAX_LOGIC_DEPTH, MAX_SELECT_ITEMS, parse_logic, parse_select, parsed_select


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


DEMO_ORGANIZATION_ID = "00000000-0000-4000-8000-000000000001"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # as hosted Supabase's gateway allows


def client_row(marker: str, name_bytes: int) -> dict[str, str]:
    return {"organization_id": DEMO_ORGANIZATION_ID, "name": marker + "x" * (name_bytes - len(marker))}


async def clients_named(database_urls: DatabaseUrls, marker: str) -> int:
    conn = await asyncpg.connect(database_urls.admin)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM clients WHERE name LIKE $1", f"{marker}%"))
    finally:
        await conn.close()


def assert_pgrst413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text[:300]
    body = response.json()
    assert sorted(body) == ["code", "details", "hint", "message"]
    assert body["code"] == "PGRST413" and str(DEFAULT_MAX_BODY_BYTES) in body["details"], body


async def test_a_row_over_1_mb_is_413_and_nothing_is_stored(rest: httpx.AsyncClient,
                                                            database_urls: DatabaseUrls) -> None:
    marker = f"too-large-{uuid.uuid4()}-"
    response = await rest.post("/clients", json=client_row(marker, 2 * DEFAULT_MAX_BODY_BYTES))
    assert_pgrst413(response)
    assert await clients_named(database_urls, marker) == 0


async def test_a_streamed_body_over_1_mb_is_413_and_nothing_is_stored(rest: httpx.AsyncClient,
                                                                      database_urls: DatabaseUrls) -> None:
    marker = f"too-large-chunked-{uuid.uuid4()}-"
    payload = json.dumps([client_row(marker, 64 * 1024) for _ in range(40)]).encode()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start:start + 64 * 1024]

    response = await rest.post("/clients", content=chunks(), headers={"Content-Type": "application/json"})
    assert_pgrst413(response)
    assert await clients_named(database_urls, marker) == 0


@pytest.mark.parametrize("method, path", [("POST", "/clients"), ("PATCH", "/clients?id=is.null"),
                                          ("POST", "/rpc/ingest_telegram_message")])
def test_a_declared_length_over_1_mb_is_answered_before_the_body_is_sent(api_server: str, local_keys: LocalKeys,
                                                                         method: str, path: str) -> None:
    key = local_keys.service_role_key
    answer = answer_to_head(f"{api_server}/rest/v1{path}", method, {
        "apikey": key, "Authorization": f"Bearer {key}", "Content-Type": "application/json",
        "Content-Length": str(50 * 1024 * 1024)})
    assert status_of(answer) == 413, answer[:300]


async def test_a_body_just_under_1_mb_is_stored(rest: httpx.AsyncClient, database_urls: DatabaseUrls) -> None:
    marker = f"at-the-limit-{uuid.uuid4()}-"
    row = client_row(marker, DEFAULT_MAX_BODY_BYTES - 200)
    assert len(json.dumps(row)) <= DEFAULT_MAX_BODY_BYTES
    response = await rest.post("/clients", json=row)
    assert response.status_code == 201, response.text[:300]
    assert await clients_named(database_urls, marker) == 1
    deleted = await rest.delete("/clients", params={"name": f"like.{marker}*"})
    assert deleted.status_code == 204, deleted.text[:300]


def test_the_parser_refuses_a_tree_past_the_limit_without_recursing_into_it() -> None:
    with pytest.raises(RestError) as raised:
        parse_logic("or", nested(10_000))
    assert (raised.value.status, raised.value.code) == (400, "PGRST100")


def test_the_parser_refuses_a_select_past_the_limit() -> None:
    with pytest.raises(RestError) as raised:
        parse_select(",".join(["id"] * (MAX_SELECT_ITEMS + 1)))
    assert (raised.value.status, raised.value.code) == (400, "PGRST100")


def test_a_repeated_select_is_parsed_once_and_a_refused_one_is_refused_every_time() -> None:
    assert parsed_select("id, name, phone") is parsed_select("id, name, phone")
    assert parsed_select("id, name, phone") == parse_select("id, name, phone")
    for _ in range(2):
        with pytest.raises(RestError):
            parsed_select("id, clients(name)")
    long_select = ",".join(["id"] * 800)  # longer than what is remembered: parsed as it comes
    assert parsed_select(long_select) == parse_select(long_select)
