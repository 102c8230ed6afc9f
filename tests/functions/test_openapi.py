"""The functions host describes itself at /functions/v1/openapi.json (every function's body, answer and error codes,
and the webhook crm_server posts) and shows it in Swagger UI at /functions/v1/docs, both without a token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from functions._shared import errors
from functions._shared.settings import FunctionsSettings
from functions.host import FUNCTIONS, create_standalone_app, read_verify_jwt
from functions.openapi import FUNCTION_DOCS, named_errors

BASE = "http://functions.example"


@pytest.fixture
async def host() -> AsyncIterator[httpx.AsyncClient]:
    settings = FunctionsSettings(supabase_url="http://127.0.0.1:9", supabase_service_role_key="service",
                                 supabase_jwt_secret="openapi-test-secret-openapi-test-secret")
    app = create_standalone_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


async def description(host: httpx.AsyncClient) -> dict:
    response = await host.get("/functions/v1/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_function_is_described_with_the_methods_it_takes(host: httpx.AsyncClient) -> None:
    spec = await description(host)
    assert {(path, method) for path, methods in spec["paths"].items() for method in methods} == {
        (f"/{function.name}", method.lower()) for function in FUNCTIONS for method in function.methods}
    assert spec["servers"] == [{"url": f"{BASE}/functions/v1"}]
    assert {doc.name for doc in FUNCTION_DOCS} == {function.name for function in FUNCTIONS}


async def test_bodies_and_answers_come_from_the_functions_models(host: httpx.AsyncClient) -> None:
    spec = await description(host)
    connect = spec["paths"]["/telegram-crm-connect"]["post"]
    body_ref = connect["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = spec["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    assert {"crmApiUrl", "crmApiKey", "crmPhoneNumber"} <= set(body["required"])
    answer_ref = connect["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert {"integrationId", "webhookUrl"} <= set(spec["components"]["schemas"][answer_ref.rsplit("/", 1)[-1]][
        "properties"])


async def test_error_codes_are_listed_under_their_status(host: httpx.AsyncClient) -> None:
    spec = await description(host)
    send = spec["paths"]["/telegram-send"]["post"]["responses"]
    assert "SEND_OUTCOME_UNKNOWN" in send["504"]["content"]["application/json"]["schema"]["properties"]["code"]["enum"]
    assert {"UNAUTHORIZED", "INVALID_TOKEN"} <= set(send["401"]["description"].split(", "))
    webhook = spec["paths"]["/telegram-crm-webhook"]["post"]["responses"]
    assert {"INVALID_SECRET", "INVALID_SIGNATURE"} <= set(webhook["401"]["description"].split(", "))
    assert webhook["403"]["description"] == "PROJECT_MISMATCH"


def test_each_function_documents_every_error_its_own_module_names() -> None:
    for doc in FUNCTION_DOCS:
        documented = {cls for module in doc.modules for cls in named_errors(module)}
        assert named_errors(doc.modules[0]) <= documented
    assert errors.SendOutcomeUnknownError in {cls for module in FUNCTION_DOCS[1].modules for cls in named_errors(module)}


async def test_security_follows_verify_jwt_of_config_toml(host: httpx.AsyncClient) -> None:
    spec = await description(host)
    verify = read_verify_jwt(FunctionsSettings.model_fields["supabase_config"].default)
    for function in FUNCTIONS:
        for operation in spec["paths"][f"/{function.name}"].values():
            expected = [{"UserJwt": []}] if verify.get(function.name, function.verify_jwt) else []
            assert operation["security"] == expected, function.name


async def test_the_webhook_crm_server_posts_is_described(host: httpx.AsyncClient) -> None:
    spec = await description(host)
    posted = spec["webhooks"]["telegram-message"]["post"]
    ref = posted["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    payload = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"project_id", "account_phone", "from_id"} <= set(payload["required"])
    assert {"webhook-id", "webhook-timestamp", "webhook-signature", "X-Lovable-Secret"} == {
        parameter["name"] for parameter in posted["parameters"]}


async def test_the_docs_page_opens_without_a_token_and_loads_only_its_own_files(host: httpx.AsyncClient) -> None:
    page = await host.get("/functions/v1/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    sources = re.findall(r"(?:src|href)='([^']+)'", page.text)
    assert sources and all(source.startswith("docs/assets/") for source in sources)
    for source in sources:
        asset = await host.get(f"/functions/v1/{source}")
        assert asset.status_code == 200 and len(asset.content) > 100, source
    assert (await host.get("/functions/v1/docs/assets/index.html")).status_code == 404  # only the listed files
