"""Errors reach supabase-py as APIError with PostgREST's code, and with PostgREST's HTTP status on the wire."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient

from supabase_local.keys import LocalKeys, api_key, sign, user_token
from supabase_local.rest.errors import from_postgres, status_for_sqlstate
from tests.conftest import DEMO_ORGANIZATION_ID, DEMO_USER_ID, ClientFactory, StatusRecorder, UserClientFactory


async def expect_error(client: AsyncClient, record_statuses: StatusRecorder, request, code: str | None,
                       status: int) -> APIError:
    async with record_statuses(client) as statuses:
        with pytest.raises(APIError) as raised:
            await request.execute()
    assert (raised.value.code, statuses) == (code, [status]), raised.value.message
    return raised.value


async def test_unique_violation_is_23505_conflict(service_client: AsyncClient,
                                                  record_statuses: StatusRecorder) -> None:
    client_id = str(uuid.uuid4())
    row = {"id": client_id, "organization_id": DEMO_ORGANIZATION_ID, "name": "unique"}
    await service_client.table("clients").insert(row).execute()
    error = await expect_error(service_client, record_statuses, service_client.table("clients").insert(row),
                               "23505", 409)
    assert "already exists" in str(error.details)


async def test_invalid_uuid_is_22p02_bad_request(service_client: AsyncClient,
                                                 record_statuses: StatusRecorder) -> None:
    await expect_error(service_client, record_statuses,
                       service_client.table("clients").select("id").eq("id", "not-a-uuid"), "22P02", 400)


@pytest.mark.parametrize("where", ["select", "filter", "order"])
async def test_unknown_column_is_42703_bad_request(service_client: AsyncClient, record_statuses: StatusRecorder,
                                                   where: str) -> None:
    table = service_client.table("clients")
    request = {
        "select": lambda: table.select("id,no_such_column"),
        "filter": lambda: table.select("id").eq("no_such_column", 1),
        "order": lambda: table.select("id").order("no_such_column"),
    }[where]()
    await expect_error(service_client, record_statuses, request, "42703", 400)


async def test_unknown_column_in_body_is_pgrst204(service_client: AsyncClient,
                                                  record_statuses: StatusRecorder) -> None:
    request = service_client.table("clients").insert({"organization_id": DEMO_ORGANIZATION_ID, "name": "x",
                                                      "no_such_column": 1})
    await expect_error(service_client, record_statuses, request, "PGRST204", 400)


async def test_unknown_table_is_42p01_not_found(service_client: AsyncClient,
                                                record_statuses: StatusRecorder) -> None:
    await expect_error(service_client, record_statuses, service_client.table("no_such_table").select("*"),
                       "42P01", 404)


async def test_not_null_violation_is_23502(service_client: AsyncClient, record_statuses: StatusRecorder) -> None:
    request = service_client.table("clients").insert({"organization_id": DEMO_ORGANIZATION_ID, "name": None})
    await expect_error(service_client, record_statuses, request, "23502", 400)


async def test_foreign_key_violation_is_23503_conflict(service_client: AsyncClient,
                                                       record_statuses: StatusRecorder) -> None:
    request = service_client.table("clients").insert({"organization_id": str(uuid.uuid4()), "name": "orphan"})
    await expect_error(service_client, record_statuses, request, "23503", 409)


async def test_check_violation_is_23514(service_client: AsyncClient, record_statuses: StatusRecorder) -> None:
    request = service_client.table("messenger_integrations").insert(
        {"organization_id": DEMO_ORGANIZATION_ID, "provider": "carrier-pigeon"})
    await expect_error(service_client, record_statuses, request, "23514", 400)


async def test_unknown_function_is_pgrst202_not_found(service_client: AsyncClient,
                                                      record_statuses: StatusRecorder) -> None:
    await expect_error(service_client, record_statuses, service_client.rpc("no_such_function", {"a": 1}),
                       "PGRST202", 404)


async def test_embedded_resources_are_refused_clearly(service_client: AsyncClient,
                                                      record_statuses: StatusRecorder) -> None:
    error = await expect_error(service_client, record_statuses,
                               service_client.table("clients").select("id, organizations(name)"), "PGRST100", 400)
    assert "embedded" in str(error.message)


async def test_anon_key_reads_nothing(anon_client: AsyncClient, record_statuses: StatusRecorder) -> None:
    await expect_error(anon_client, record_statuses, anon_client.table("clients").select("id"), "42501", 401)


async def test_expired_user_token_is_401(make_supabase_client: ClientFactory, local_keys: LocalKeys,
                                         record_statuses: StatusRecorder) -> None:
    token = user_token(DEMO_USER_ID, local_keys.jwt_secret, lifetime=-60)
    client = await make_supabase_client(local_keys.anon_key, token)
    await expect_error(client, record_statuses, client.table("clients").select("id"), "PGRST303", 401)


@pytest.mark.parametrize("kind", ["other secret", "garbage", "foreign role", "alg none"])
async def test_bad_token_is_pgrst301(make_supabase_client: ClientFactory, local_keys: LocalKeys,
                                     record_statuses: StatusRecorder, kind: str) -> None:
    token = {
        "other secret": api_key("service_role", "another-project-secret-of-a-decent-length"),
        "garbage": "not.a.jwt",
        "foreign role": sign({"role": "postgres", "exp": 4102444800}, local_keys.jwt_secret),
        "alg none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.",
    }[kind]
    # The project's key passes the gateway; the bad token is the session token PostgREST checks.
    client = await make_supabase_client(local_keys.anon_key, token)
    await expect_error(client, record_statuses, client.table("clients").select("id"), "PGRST301", 401)


async def test_request_without_any_key_is_401(make_supabase_client: ClientFactory, local_keys: LocalKeys,
                                              record_statuses: StatusRecorder) -> None:
    client = await make_supabase_client(local_keys.anon_key)
    for header in ("apikey", "authorization"):
        client.postgrest.session.headers.pop(header, None)
        client.postgrest.headers.pop(header, None)
    # The gateway answers before PostgREST, with its own body (no PostgREST code).
    error = await expect_error(client, record_statuses, client.table("clients").select("id"), None, 401)
    assert error.message == "No API key found in request"


async def test_a_bad_apikey_is_refused_by_the_gateway(make_supabase_client: ClientFactory,
                                                      record_statuses: StatusRecorder) -> None:
    client = await make_supabase_client(api_key("service_role", "another-project-secret-of-a-decent-length"))
    error = await expect_error(client, record_statuses, client.table("clients").select("id"), None, 401)
    assert error.message == "Invalid API key"


async def test_user_token_may_not_call_service_only_function(user_client: UserClientFactory,
                                                              record_statuses: StatusRecorder) -> None:
    client = await user_client(DEMO_USER_ID)
    request = client.rpc("ingest_telegram_message", {"p_organization_id": DEMO_ORGANIZATION_ID,
                                                     "p_integration_id": None, "p_telegram_user_id": "1",
                                                     "p_message_text": "x"})
    await expect_error(client, record_statuses, request, "42501", 403)


async def test_other_schema_is_refused(service_client: AsyncClient, record_statuses: StatusRecorder) -> None:
    await expect_error(service_client, record_statuses, service_client.schema("auth").table("users").select("id"),
                       "PGRST106", 406)


@pytest.mark.parametrize(
    ("sqlstate", "role", "status"),
    [("23505", "service_role", 409), ("23503", "authenticated", 409), ("23502", "anon", 400),
     ("23514", "anon", 400), ("22P02", "anon", 400), ("22023", "anon", 400), ("42703", "anon", 400),
     ("42P01", "anon", 404), ("42883", "anon", 404), ("42501", "anon", 401), ("42501", "authenticated", 403),
     ("P0001", "anon", 400), ("PT418", "anon", 418), ("40001", "anon", 500), ("08006", "anon", 503),
     ("XX000", "anon", 500), ("25006", "anon", 405)],
)
def test_sqlstate_to_http_status(sqlstate: str, role: str, status: int) -> None:
    assert status_for_sqlstate(sqlstate, role) == status


def test_server_faults_do_not_leak_their_message() -> None:
    fault = asyncpg.exceptions.InternalServerError("could not read block 7 in file base/5/1259")
    error = from_postgres(fault, "service_role")
    assert (error.status, error.code, error.message, error.details) == (500, "XX000", "Internal server error", None)
