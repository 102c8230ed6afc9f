"""The API process of `tgcrm up` serves /storage/v1 when `TGCRM_STORAGE_DIR` names where its files live."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from storage3 import AsyncStorageClient

from supabase_local.database import DatabaseUrls
from supabase_local.keys import LocalKeys
from tests.helpers.net import free_port, wait_http
from tgcrm.api_process import ApiProcessSettings, build_app


@pytest.fixture(scope="module")
def api_process(database_urls: DatabaseUrls, local_keys: LocalKeys, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[tuple[str, Path]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    storage_dir = tmp_path_factory.mktemp("api-process") / "storage"
    environment = {"SUPABASE_URL": base_url, "SUPABASE_SERVICE_ROLE_KEY": local_keys.service_role_key,
                   "SUPABASE_JWT_SECRET": local_keys.jwt_secret, "SUPABASE_ANON_KEY": local_keys.anon_key,
                   "TGCRM_REST_DATABASE_URL": database_urls.authenticator, "TGCRM_STORAGE_DIR": str(storage_dir),
                   "TGCRM_AUTH_DATABASE_URL": database_urls.auth_admin}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        app = build_app(ApiProcessSettings(), "127.0.0.1", port)  # type: ignore[call-arg]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        wait_http(f"{base_url}/health", expect_status=200)
        yield base_url, storage_dir
    finally:
        server.should_exit = True
        thread.join(timeout=15)


async def test_storage_is_served_with_files_in_the_storage_dir(api_process: tuple[str, Path],
                                                               local_keys: LocalKeys) -> None:
    base_url, storage_dir = api_process
    key = local_keys.service_role_key
    async with httpx.AsyncClient() as http:
        storage = AsyncStorageClient(f"{base_url}/storage/v1/", {"apikey": key, "Authorization": f"Bearer {key}"},
                                     http_client=http)
        bucket = storage.from_("chat-media")
        await bucket.upload("api-process/a.txt", b"through the API process")
        assert await bucket.download("api-process/a.txt") == b"through the API process"
        assert [path.read_bytes() for path in (storage_dir / "objects").rglob("*") if path.is_file()] == \
            [b"through the API process"]
        await bucket.remove(["api-process/a.txt"])
