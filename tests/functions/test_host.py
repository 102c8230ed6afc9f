"""The host around the functions: CORS, methods, size limit, verify_jwt from config.toml, JSON errors.

These checks need no database, so they run against the ASGI app in-process.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from functions._shared.settings import FunctionsSettings
from functions.host import create_functions_app, read_verify_jwt

SECRET = "host-test-secret-host-test-secret-1234"


@pytest.fixture
async def host() -> AsyncIterator[httpx.AsyncClient]:
    settings = FunctionsSettings(supabase_url="http://127.0.0.1:9", supabase_service_role_key="service",
                                 supabase_jwt_secret=SECRET, max_request_bytes=1024)
    app = create_functions_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://functions") as client:
        yield client
    await app.state.runtime_holder.close()


def test_without_a_settings_key_the_host_starts_and_warns_once_that_secrets_are_in_clear(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = FunctionsSettings(supabase_url="http://127.0.0.1:9", supabase_service_role_key="service",
                                 settings_key=None)
    with caplog.at_level(logging.WARNING, logger="functions.host"):
        create_functions_app(settings)
    warnings = [record.getMessage() for record in caplog.records if record.name == "functions.host"]
    assert len(warnings) == 1 and "FUNCTIONS_SETTINGS_KEY" in warnings[0] and "in clear" in warnings[0]


def test_with_a_settings_key_the_host_starts_without_that_warning(caplog: pytest.LogCaptureFixture) -> None:
    settings = FunctionsSettings(supabase_url="http://127.0.0.1:9", supabase_service_role_key="service",
                                 settings_key=Fernet.generate_key().decode())
    with caplog.at_level(logging.WARNING, logger="functions.host"):
        create_functions_app(settings)
    assert not [record for record in caplog.records if "FUNCTIONS_SETTINGS_KEY" in record.getMessage()]


def test_verify_jwt_is_read_from_the_projects_config_toml() -> None:
    flags = read_verify_jwt(Path(__file__).resolve().parents[2] / "supabase" / "config.toml")
    contract = {"telegram-crm-connect": True, "telegram-crm-send": True, "telegram-send": True,
                "telegram-crm-webhook": False}
    assert {name: flags.get(name) for name in contract} == contract


def test_a_function_missing_from_config_toml_keeps_its_own_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[functions.telegram-send]\nverify_jwt = false\n[functions.other]\n')
    assert read_verify_jwt(config) == {"telegram-send": False, "other": True}
    assert read_verify_jwt(tmp_path / "missing.toml") == {}


async def test_cors_preflight_is_answered_without_a_token(host: httpx.AsyncClient) -> None:
    response = await host.options("/telegram-send", headers={"Origin": "https://crm.example",
                                                             "Access-Control-Request-Method": "POST"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "authorization" in response.headers["access-control-allow-headers"]
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_other_methods_are_405_with_allow(host: httpx.AsyncClient) -> None:
    response = await host.get("/telegram-crm-send")
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"
    assert response.headers["allow"] == "POST, OPTIONS"


async def test_unknown_function_is_404_json(host: httpx.AsyncClient) -> None:
    response = await host.post("/no-such-function", json={})
    assert response.status_code == 404
    assert response.json() == {"success": False, "error": "No function named no-such-function",
                               "code": "FUNCTION_NOT_FOUND"}


@pytest.mark.parametrize("name", ["telegram-crm-connect", "telegram-crm-send", "telegram-send"])
async def test_jwt_functions_refuse_calls_without_a_token(host: httpx.AsyncClient, name: str) -> None:
    response = await host.post(f"/{name}", json={})
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"
    assert response.headers["access-control-allow-origin"] == "*"


async def test_jwt_functions_refuse_a_bad_token(host: httpx.AsyncClient) -> None:
    response = await host.post("/telegram-send", json={}, headers={"Authorization": "Bearer abc.def.ghi"})
    assert response.status_code == 401
    assert response.json()["code"] == "INVALID_TOKEN"


async def test_bodies_over_the_limit_are_413(host: httpx.AsyncClient) -> None:
    response = await host.post("/telegram-crm-webhook?key=x", content=b"x" * 2048)
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"


async def test_streamed_bodies_over_the_limit_are_413(host: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 512

    response = await host.post("/telegram-crm-webhook?key=x", content=chunks())
    assert response.status_code == 413


async def test_provider_form_is_served_without_a_token(host: httpx.AsyncClient) -> None:
    response = await host.get("/telegram-providers")
    assert response.status_code == 200
    document = response.json()
    providers = {provider["key"]: provider for provider in document["providers"]}
    assert set(providers) == {"telegram_crm", "wappi"}
    crm_fields = {field["key"]: field for field in providers["telegram_crm"]["fields"]}
    assert crm_fields["crmApiKey"]["inputType"] == "password" and crm_fields["crmApiKey"]["required"]
    assert crm_fields["crmPhoneNumber"]["label"]["ru"]
    assert {field["key"] for field in providers["wappi"]["fields"]} >= {"profileId", "apiToken"}


async def test_an_unexpected_error_is_a_json_500_logged_once_and_not_raised_to_the_server(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    from functions import host as host_module

    async def broken(request: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(host_module, "FUNCTIONS", [
        dataclasses.replace(function, handler=broken) if function.name == "telegram-providers" else function
        for function in host_module.FUNCTIONS])
    settings = FunctionsSettings(supabase_url="http://127.0.0.1:9", supabase_service_role_key="service",
                                 supabase_jwt_secret=SECRET)
    app = create_functions_app(settings)
    # ASGITransport raises what the app raises on to its server: an answered error must not reach it.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://functions") as client:
        with caplog.at_level(logging.ERROR):
            response = await client.get("/telegram-providers")
    await app.state.runtime_holder.close()
    assert response.status_code == 500 and response.json() == {
        "success": False, "error": "Internal error", "code": "INTERNAL_ERROR"}
    assert len([record for record in caplog.records if record.exc_info]) == 1
