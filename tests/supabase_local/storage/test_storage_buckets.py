"""Buckets through storage3: create, get, list, update, empty, delete, and the errors Storage answers."""

from __future__ import annotations

import pytest
from storage3 import AsyncStorageClient
from storage3.exceptions import StorageApiError

from tests.supabase_local.storage.conftest import BucketFactory


async def test_created_bucket_is_got_and_listed(service_storage: AsyncStorageClient,
                                                make_bucket: BucketFactory) -> None:
    bucket_id = await make_bucket(public=True, file_size_limit=1024, allowed_mime_types=["image/*"])
    bucket = await service_storage.get_bucket(bucket_id)
    listed = {item.id: item for item in await service_storage.list_buckets()}
    assert (bucket.id, bucket.name, bucket.public, bucket.file_size_limit, bucket.allowed_mime_types) == \
        (bucket_id, bucket_id, True, 1024, ["image/*"])
    assert listed[bucket_id].public is True
    assert "chat-media" in listed and listed["chat-media"].public is False


async def test_update_bucket_changes_only_the_options_given(service_storage: AsyncStorageClient,
                                                            make_bucket: BucketFactory) -> None:
    bucket_id = await make_bucket(file_size_limit=1024)
    answer = await service_storage.update_bucket(bucket_id, {"public": True})
    bucket = await service_storage.get_bucket(bucket_id)
    assert answer == {"message": "Successfully updated"}
    assert (bucket.public, bucket.file_size_limit) == (True, 1024)


async def test_duplicate_bucket_is_refused(service_storage: AsyncStorageClient, make_bucket: BucketFactory) -> None:
    bucket_id = await make_bucket()
    with pytest.raises(StorageApiError) as raised:
        await service_storage.create_bucket(bucket_id)
    assert (raised.value.status, raised.value.code) == ("409", "Duplicate")


async def test_unknown_bucket_is_not_found(service_storage: AsyncStorageClient) -> None:
    with pytest.raises(StorageApiError) as raised:
        await service_storage.get_bucket("no-such-bucket")
    assert (raised.value.status, raised.value.code, raised.value.message) == \
        ("404", "Bucket not found", "Bucket not found")


async def test_bucket_with_objects_is_deleted_only_once_emptied(service_storage: AsyncStorageClient) -> None:
    await service_storage.create_bucket("test-delete-me")
    await service_storage.from_("test-delete-me").upload("a/b.txt", b"x")
    with pytest.raises(StorageApiError) as raised:
        await service_storage.delete_bucket("test-delete-me")
    assert raised.value.status == "409"
    assert await service_storage.empty_bucket("test-delete-me") == {"message": "Successfully emptied"}
    assert await service_storage.from_("test-delete-me").list() == []
    assert await service_storage.delete_bucket("test-delete-me") == {"message": "Successfully deleted"}
    with pytest.raises(StorageApiError):
        await service_storage.get_bucket("test-delete-me")


async def test_bad_bucket_options_name_the_field(service_storage: AsyncStorageClient) -> None:
    with pytest.raises(StorageApiError) as raised:
        await service_storage.create_bucket("test-bad-options", options={"file_size_limit": -1})
    assert raised.value.status == "400" and "file_size_limit" in raised.value.message


async def test_users_and_anon_do_not_manage_buckets(user_client, anon_client) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import DEMO_USER_ID

    member = (await user_client(DEMO_USER_ID)).storage
    with pytest.raises(StorageApiError) as created:
        await member.create_bucket("test-by-a-user")
    with pytest.raises(StorageApiError) as seen:
        await anon_client.storage.get_bucket("chat-media")
    assert (created.value.status, created.value.code) == ("403", "Unauthorized")
    assert seen.value.status == "404"
    assert await member.list_buckets() == []
