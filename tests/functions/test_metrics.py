"""`/functions/v1/metrics`: request counts and latency per function, upstream failures by kind, behind
FUNCTIONS_METRICS_KEY, with labels that never carry what a caller sent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from functions._shared.settings import FunctionsSettings
from functions.host import FUNCTIONS, create_functions_app
from supabase_local.keys import user_token
from tests.functions.conftest import METRICS_KEY, Organization, create_client, create_wappi_integration
from tests.helpers.net import free_port
from tests.helpers.wappi_standin import WappiStandIn

SECRET = "metrics-test-secret-metrics-test-secret"
SCRAPE = {"Authorization": f"Bearer {METRICS_KEY}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


# --- the key ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", f"Basic {METRICS_KEY}", f"Bearer {METRICS_KEY}x"])
async def test_metrics_refuse_a_missing_or_wrong_key(http: httpx.AsyncClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "INVALID_METRICS_KEY"
    assert "functions_requests_total" not in response.text


async def test_without_a_metrics_key_there_is_no_metrics_endpoint() -> None:
    settings = FunctionsSettings(supabase_url="http://127.0.0.1:9", supabase_service_role_key="service",
                                 supabase_jwt_secret=SECRET, metrics_key="")
    assert settings.metrics_key is None  # an empty variable is "not set"
    app = create_functions_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://functions") as client:
        response = await client.get("/metrics", headers={"Authorization": "Bearer "})
    await app.state.runtime_holder.close()
    assert response.status_code == 404
    assert response.json()["code"] == "FUNCTION_NOT_FOUND"


# --- what is counted ----------------------------------------------------------------------------------------------

async def test_each_answer_is_counted_by_function_method_and_status_class(http: httpx.AsyncClient) -> None:
    before = await scrape(http)
    for _ in range(2):
        assert (await http.get("/telegram-providers")).status_code == 200
    assert (await http.post("/telegram-send", json={})).status_code == 401
    after = await scrape(http)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("functions_requests_total", function="telegram-providers", method="GET", status_class="2xx") == 2
    assert moved("functions_requests_total", function="telegram-send", method="POST", status_class="4xx") == 1
    assert moved("functions_request_seconds_count", function="telegram-providers") == 2
    assert moved("functions_request_seconds_bucket", function="telegram-providers", le="+Inf") == 2
    assert moved("functions_request_seconds_sum", function="telegram-providers") > 0


async def test_an_unreachable_crm_server_is_counted_as_its_upstream_error(
        http: httpx.AsyncClient, make_organization: Callable[[], Awaitable[Organization]]) -> None:
    organization = await make_organization()
    before = await scrape(http)
    response = await http.post("/telegram-crm-connect", headers=organization.auth, json={
        "crmApiUrl": f"http://127.0.0.1:{free_port()}", "crmApiKey": "tgcrm_nobody", "crmPhoneNumber": "+15550001111"})
    assert response.status_code == 502 and response.json()["code"] == "CRM_SERVER_UNREACHABLE"
    after = await scrape(http)
    labels = {"upstream": "crm_server", "kind": "CRM_SERVER_UNREACHABLE"}
    assert value(after, "functions_upstream_errors_total", **labels) - \
        value(before, "functions_upstream_errors_total", **labels) == 1
    assert value(after, "functions_requests_total", function="telegram-crm-connect", method="POST",
                 status_class="5xx") - value(before, "functions_requests_total", function="telegram-crm-connect",
                                             method="POST", status_class="5xx") == 1


async def test_an_upstream_failure_the_function_recovers_from_is_counted_too(
        http: httpx.AsyncClient, db: asyncpg.Pool, wappi_standin: WappiStandIn,
        make_organization: Callable[[], Awaitable[Organization]]) -> None:
    organization = await make_organization()
    for primary in (True, False):
        profile_id, token = f"profile-{uuid.uuid4().hex[:10]}", f"token-{uuid.uuid4().hex}"
        wappi_standin.add_profile(profile_id, token, None)
        await create_wappi_integration(db, organization.id, profile_id, token, primary=primary)
    client_id = await create_client(db, organization.id, username="metrics_friend")
    before = await scrape(http)
    wappi_standin.fail_next(503, "maintenance")
    response = await http.post("/telegram-send", headers=organization.auth,
                               json={"clientId": client_id, "text": "through the backup"})
    assert response.status_code == 200 and response.json()["failedOver"] is True, response.text
    after = await scrape(http)
    labels = {"upstream": "wappi", "kind": "WAPPI_ERROR"}
    # The answer is a success; only the count says the primary integration's provider failed.
    assert value(after, "functions_upstream_errors_total", **labels) - \
        value(before, "functions_upstream_errors_total", **labels) == 1


@pytest.fixture
async def host_without_database() -> AsyncIterator[httpx.AsyncClient]:
    """The host in-process with a REST API nobody listens on: every database call fails to connect."""
    settings = FunctionsSettings(supabase_url=f"http://127.0.0.1:{free_port()}", supabase_service_role_key="service",
                                 supabase_jwt_secret=SECRET, metrics_key=METRICS_KEY, http_timeout_seconds=5)
    app = create_functions_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://functions") as client:
        yield client
    await app.state.runtime_holder.close()


async def test_a_database_that_does_not_answer_is_counted_as_unreachable(
        host_without_database: httpx.AsyncClient) -> None:
    token = user_token(str(uuid.uuid4()), SECRET)
    response = await host_without_database.post("/telegram-send", headers={"Authorization": f"Bearer {token}"},
                                                json={"clientId": str(uuid.uuid4()), "text": "hello"})
    assert response.status_code == 503 and response.json()["code"] == "DATABASE_ERROR"
    after = await scrape(host_without_database)
    assert value(after, "functions_upstream_errors_total", upstream="database", kind="unreachable") >= 1
    assert value(after, "functions_requests_total", function="telegram-send", method="POST", status_class="5xx") == 1


async def test_labels_never_carry_what_the_caller_sent(
        http: httpx.AsyncClient, make_organization: Callable[[], Awaitable[Organization]]) -> None:
    organization = await make_organization()
    phone, client_id = "+4915112345678", str(uuid.uuid4())
    assert (await http.post(f"/{phone}", json={})).status_code == 404
    assert (await http.get(f"/{client_id}")).status_code == 404
    await http.post("/telegram-send", headers=organization.auth, json={"clientId": client_id, "text": "secret text"})
    await http.post("/telegram-crm-connect", headers=organization.auth, json={
        "crmApiUrl": f"http://127.0.0.1:{free_port()}", "crmApiKey": "tgcrm_secret_key", "crmPhoneNumber": phone})
    response = await http.get("/metrics", headers=SCRAPE)
    for sent in (phone, phone[1:], client_id, organization.id, organization.user_id, "secret text",
                 "tgcrm_secret_key", METRICS_KEY):
        assert sent not in response.text
    found = samples(response.text)
    functions = {dict(labels)["function"] for _, labels in found if "function" in dict(labels)}
    assert "unknown" in functions
    assert functions <= {function.name for function in FUNCTIONS} | {"unknown"}
