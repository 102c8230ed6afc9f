"""The gateway as an HTTP service: statuses and headers, CORS for browsers, the schema cache, lifespan-less mounts."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
from supabase import AsyncClient

from supabase_local.database import DatabaseUrls
from supabase_local.keys import LocalKeys
from supabase_local.rest.app import create_rest_app
from tests.conftest import DEMO_ORGANIZATION_ID, StatusRecorder


async def test_partial_page_with_count_is_206(service_client: AsyncClient, record_statuses: StatusRecorder) -> None:
    async with record_statuses(service_client) as statuses:
        result = await service_client.table("clients").select("id", count="exact") \
            .eq("organization_id", DEMO_ORGANIZATION_ID).limit(1).execute()
    assert statuses == [206]
    assert len(result.data) == 1 and result.count is not None and result.count > 1


async def test_insert_is_201_and_minimal_update_is_204(service_client: AsyncClient,
                                                       record_statuses: StatusRecorder) -> None:
    name = f"status-{uuid.uuid4()}"
    async with record_statuses(service_client) as statuses:
        await service_client.table("clients").insert({"organization_id": DEMO_ORGANIZATION_ID, "name": name}) \
            .execute()
        await service_client.table("clients").update({"phone": "+1"}, returning="minimal").eq("name", name) \
            .execute()
        await service_client.table("clients").delete().eq("name", name).execute()
    assert statuses == [201, 204, 200]


async def test_content_range_and_preference_applied_headers(api_server: str, local_keys: LocalKeys) -> None:
    headers = {"apikey": local_keys.service_role_key, "Prefer": "count=exact"}
    async with httpx.AsyncClient(base_url=f"{api_server}/rest/v1", headers=headers) as http:
        page = await http.get("/clients", params={"select": "id", "organization_id": f"eq.{DEMO_ORGANIZATION_ID}",
                                                  "offset": "1", "limit": "1"})
        empty = await http.get("/clients", params={"select": "id", "name": "eq.nobody at all"})
        beyond = await http.get("/clients", params={"select": "id", "offset": "100000"})
    total = page.headers["content-range"].split("/")[1]
    assert page.headers["content-range"] == f"1-1/{total}"
    assert page.headers["preference-applied"] == "count=exact"
    assert empty.headers["content-range"] == "*/0"
    assert (beyond.status_code, beyond.json()["code"]) == (416, "PGRST103")


async def test_cors_preflight_allows_supabase_headers(api_server: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.options(f"{api_server}/rest/v1/clients", headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, apikey, content-type, prefer, range, x-client-info, "
                                              "accept-profile, content-profile",
        })
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "PATCH" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert all(name in allowed for name in ("apikey", "prefer", "x-client-info", "content-profile"))


async def test_cors_response_exposes_content_range(api_server: str, local_keys: LocalKeys) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{api_server}/rest/v1/clients", params={"select": "id"},
                                  headers={"Origin": "http://localhost:5173", "apikey": local_keys.service_role_key})
    assert response.status_code == 200
    assert "content-range" in response.headers["access-control-expose-headers"].lower()


async def test_health(api_server: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{api_server}/health")
    assert response.json() == {"status": "ok"}


async def test_table_created_after_start_is_found(service_client: AsyncClient, database_urls: DatabaseUrls) -> None:
    """A miss reloads the schema cache once, as `NOTIFY pgrst, 'reload schema'` would."""
    table = f"rest_test_late_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_urls.admin)
    try:
        await conn.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, label text)")
        await conn.execute(f"INSERT INTO public.{table} VALUES (1, 'late')")
    finally:
        await conn.close()
    try:
        result = await service_client.table(table).select("label").execute()
    finally:
        conn = await asyncpg.connect(database_urls.admin)
        try:
            await conn.execute(f"DROP TABLE public.{table}")
        finally:
            await conn.close()
    assert result.data == [{"label": "late"}]


async def test_rest_app_mounted_without_lifespan_creates_its_pool(database_urls: DatabaseUrls,
                                                                  local_keys: LocalKeys) -> None:
    app = create_rest_app(database_urls.authenticator, local_keys.jwt_secret)
    transport = httpx.ASGITransport(app=app)  # runs no lifespan
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://rest") as http:
            response = await http.get("/clients", params={"select": "id", "limit": "1"},
                                      headers={"apikey": local_keys.service_role_key})
        assert response.status_code == 200
        assert len(response.json()) == 1
    finally:
        await app.state.gateway.close()


async def test_api_key_may_come_in_the_url(api_server: str, local_keys: LocalKeys) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{api_server}/rest/v1/clients",
                                  params={"select": "id", "limit": "1", "apikey": local_keys.service_role_key})
    assert response.status_code == 200 and len(response.json()) == 1


async def test_json_nested_deeper_than_the_parser_allows_is_400(api_server: str, local_keys: LocalKeys) -> None:
    # Found by the reliability fuzzer: json.loads raised RecursionError, which became a 500.
    headers = {"apikey": local_keys.service_role_key, "Authorization": f"Bearer {local_keys.service_role_key}",
               "Content-Type": "application/json"}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{api_server}/rest/v1/clients", headers=headers,
                                   content=b'{"a":' * 5000 + b"1" + b"}" * 5000)
    assert response.status_code == 400, response.text


async def test_paths_and_methods_beside_the_routes_answer_as_starlette_routes_them(api_server: str,
                                                                                   local_keys: LocalKeys) -> None:
    # The table and rpc routes are taken directly (supabase_local/rest/app.py: RestApp); everything else still goes
    # through Starlette's router: a deeper path is its 404, an unrouted method its 405 with Allow.
    headers = {"apikey": local_keys.service_role_key}
    async with httpx.AsyncClient(base_url=f"{api_server}/rest/v1", headers=headers) as http:
        deeper = await http.get("/clients/extra")
        unrouted = await http.put("/clients", json={})
        rpc_unrouted = await http.delete("/rpc/anything")
        routed = await http.head("/clients", params={"select": "id", "limit": "1"})
    assert (deeper.status_code, deeper.text) == (404, "Not Found")
    assert unrouted.status_code == 405 and "GET" in unrouted.headers["allow"]
    assert rpc_unrouted.status_code == 405 and "POST" in rpc_unrouted.headers["allow"]
    assert routed.status_code == 200 and routed.headers["content-range"] == "0-0/*" and routed.content == b""


async def test_an_answer_to_a_request_without_origin_varies_by_origin(api_server: str, local_keys: LocalKeys) -> None:
    # What Starlette's CORS middleware adds when there is no Origin, which RestApp adds itself on its direct way.
    async with httpx.AsyncClient(base_url=f"{api_server}/rest/v1") as http:
        read = await http.get("/clients", params={"select": "id", "limit": "1"},
                              headers={"apikey": local_keys.service_role_key})
        refused = await http.get("/clients", headers={"apikey": local_keys.anon_key,
                                                      "Authorization": "Bearer not-a-token"})
    assert read.status_code == 200 and read.headers.get_list("vary") == ["Origin"]
    assert "access-control-allow-origin" not in read.headers
    assert refused.status_code == 401 and refused.headers.get_list("vary") == ["Origin"]
