"""The functions mounted on the local API app at /functions/v1, as `tgcrm up` serves them beside /rest/v1."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet

from functions._shared.settings import FunctionsSettings
from functions.host import create_functions_app
from tests.helpers.net import free_port, wait_http


@pytest.fixture(scope="module")
def mounted(database_urls: Any, local_keys: Any) -> Iterator[str]:
    from supabase_local.api import create_api_app
    from supabase_local.rest.app import create_rest_app

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # FUNCTIONS_PUBLIC_URL unset: webhook URLs are built from SUPABASE_URL, this very app.
    settings = FunctionsSettings(supabase_url=base_url, supabase_service_role_key=local_keys.service_role_key,
                                 supabase_jwt_secret=local_keys.jwt_secret, settings_key=Fernet.generate_key().decode())
    app = create_api_app(create_rest_app(database_urls.authenticator, local_keys.jwt_secret),
                         extra_mounts={"/functions/v1": create_functions_app(settings)},
                         api_keys=(local_keys.anon_key, local_keys.service_role_key))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        wait_http(f"{base_url}/health", expect_status=200)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_functions_and_rest_share_one_port(mounted: str) -> None:
    assert httpx.get(f"{mounted}/functions/v1/telegram-providers").status_code == 200
    # The functions reach the database through /rest/v1 of the same app.
    webhook = httpx.post(f"{mounted}/functions/v1/telegram-crm-webhook?key=unknown", json={})
    assert (webhook.status_code, webhook.json()["code"]) == (404, "INTEGRATION_NOT_FOUND")


def test_webhook_urls_default_to_the_supabase_url(mounted: str) -> None:
    settings = FunctionsSettings(supabase_url=mounted + "/", supabase_service_role_key="k")
    assert settings.webhook_url("abc") == f"{mounted}/functions/v1/telegram-crm-webhook?key=abc"
