"""Storage test fixtures: supabase-py's own storage client against the session's API server, and fresh buckets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from storage3 import AsyncStorageClient
from supabase import AsyncClient

BucketFactory = Callable[..., Awaitable[str]]


@pytest.fixture(scope="session")
def service_storage(service_client: AsyncClient) -> AsyncStorageClient:
    return service_client.storage


@pytest.fixture
async def make_bucket(service_storage: AsyncStorageClient) -> AsyncIterator[BucketFactory]:
    """`await make_bucket(public=False, **options)`: a new bucket with a unique id, emptied and deleted afterwards."""
    made: list[str] = []

    async def make(**options: object) -> str:
        bucket_id = f"test-{uuid.uuid4().hex[:12]}"
        await service_storage.create_bucket(bucket_id, options=options or None)  # type: ignore[arg-type]
        made.append(bucket_id)
        return bucket_id

    yield make
    for bucket_id in made:
        await service_storage.empty_bucket(bucket_id)
        await service_storage.delete_bucket(bucket_id)
