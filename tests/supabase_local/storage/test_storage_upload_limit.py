"""The global upload limit (STORAGE_MAX_UPLOAD_BYTES): an app with a small one, on its own port over the shared
database, refuses a larger object as EntityTooLarge and keeps neither its file nor a row."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from storage3 import AsyncStorageClient
from storage3.exceptions import StorageApiError

from supabase_local.database import DatabaseUrls
from supabase_local.keys import LocalKeys
from tests.helpers.net import free_port, wait_http

LIMIT = 4096


@pytest.fixture(scope="module")
def small_limit_storage(database_urls: DatabaseUrls, local_keys: LocalKeys,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from supabase_local.api import STORAGE_PREFIX, create_api_app
    from supabase_local.rest.app import create_rest_app
    from supabase_local.storage import create_storage_app

    files = tmp_path_factory.mktemp("storage-limit")
    storage = create_storage_app(database_urls.authenticator, local_keys.jwt_secret, files, max_upload_bytes=LIMIT)
    app = create_api_app(create_rest_app(database_urls.authenticator, local_keys.jwt_secret),
                         extra_mounts={STORAGE_PREFIX: storage},
                         api_keys=(local_keys.anon_key, local_keys.service_role_key))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="small-limit-storage", daemon=True)
    thread.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/health", expect_status=200)
        yield f"http://127.0.0.1:{port}", files
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_an_upload_over_the_global_limit_is_refused_and_leaves_nothing(
        small_limit_storage: tuple[str, Path], local_keys: LocalKeys, service_storage: AsyncStorageClient) -> None:
    base_url, files = small_limit_storage
    key = local_keys.service_role_key
    async with httpx.AsyncClient() as http:
        storage = AsyncStorageClient(f"{base_url}/storage/v1/", {"apikey": key, "Authorization": f"Bearer {key}"},
                                     http_client=http)
        name = f"limit/{uuid.uuid4()}.bin"
        with pytest.raises(StorageApiError) as multipart:
            await storage.from_("chat-media").upload(name, b"x" * (LIMIT + 1))

        # A raw body that declares no length is counted as it arrives.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(LIMIT // 1024 + 1):
                yield b"y" * 1024
        raw = await http.post(f"{base_url}/storage/v1/object/chat-media/{name}", content=chunks(),
                              headers={"apikey": key, "Authorization": f"Bearer {key}",
                                       "content-type": "application/octet-stream"})
        await storage.from_("chat-media").upload(f"{name}.ok", b"x" * LIMIT)
    assert (multipart.value.status, multipart.value.code) == ("413", "Payload too large")
    assert raw.status_code == 400 and raw.json()["statusCode"] == "413"
    assert await service_storage.from_("chat-media").exists(name) is False
    assert len([path for path in files.rglob("*") if path.is_file()]) == 1
    await service_storage.from_("chat-media").remove([f"{name}.ok"])
