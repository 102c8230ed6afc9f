"""Objects through storage3: upload, upsert, update, download (as the caller, public, signed), list, info, move,
copy, remove; the bytes on disk follow the rows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from storage3 import AsyncStorageClient
from storage3.exceptions import StorageApiError

from tests.supabase_local.storage.conftest import BucketFactory


def stored_files(state_dir: Path) -> set[Path]:
    return {path for path in (state_dir / "storage").rglob("*") if path.is_file()}


async def test_upload_then_download_returns_the_bytes_and_headers(service_storage: AsyncStorageClient,
                                                                  make_bucket: BucketFactory,
                                                                  api_server: str,
                                                                  local_keys) -> None:  # type: ignore[no-untyped-def]
    bucket_id = await make_bucket()
    bucket = service_storage.from_(bucket_id)
    data = bytes(range(256)) * 1000
    uploaded = await bucket.upload("docs/report.pdf", data,
                                   {"content-type": "application/pdf", "cache-control": "120"})
    assert (uploaded.path, uploaded.full_path) == ("docs/report.pdf", f"{bucket_id}/docs/report.pdf")
    assert await bucket.download("docs/report.pdf") == data
    headers = {"Authorization": f"Bearer {local_keys.service_role_key}", "apikey": local_keys.service_role_key}
    async with httpx.AsyncClient() as http:
        answer = await http.get(f"{api_server}/storage/v1/object/authenticated/{bucket_id}/docs/report.pdf",
                                headers=headers)
    assert answer.content == data
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["cache-control"] == "max-age=120"
    assert answer.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'


async def test_stored_file_is_private_to_the_owner(service_storage: AsyncStorageClient, make_bucket: BucketFactory,
                                                   state_dir: Path) -> None:
    bucket_id = await make_bucket()
    before = stored_files(state_dir)
    await service_storage.from_(bucket_id).upload("a.txt", b"secret")
    (new_file,) = stored_files(state_dir) - before
    assert new_file.stat().st_mode & 0o777 == 0o600
    assert new_file.read_bytes() == b"secret"


async def test_duplicate_upload_without_upsert_is_refused(service_storage: AsyncStorageClient,
                                                          make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    await bucket.upload("a.txt", b"first")
    with pytest.raises(StorageApiError) as raised:
        await bucket.upload("a.txt", b"second")
    assert (raised.value.status, raised.value.code, raised.value.message) == \
        ("409", "Duplicate", "The resource already exists")
    assert await bucket.download("a.txt") == b"first"


async def test_upsert_and_update_replace_the_bytes_and_free_the_old_file(
        service_storage: AsyncStorageClient, make_bucket: BucketFactory, state_dir: Path) -> None:
    bucket = service_storage.from_(await make_bucket())
    await bucket.upload("a.txt", b"first")
    files_after_first = stored_files(state_dir)
    await bucket.upload("a.txt", b"second", {"upsert": "true"})
    assert await bucket.download("a.txt") == b"second"
    await bucket.update("a.txt", b"third")
    assert await bucket.download("a.txt") == b"third"
    assert len(stored_files(state_dir)) == len(files_after_first)


async def test_public_bucket_serves_without_a_key(service_storage: AsyncStorageClient,
                                                  make_bucket: BucketFactory) -> None:
    public = service_storage.from_(await make_bucket(public=True))
    private = service_storage.from_(await make_bucket())
    await public.upload("logo.png", b"png", {"content-type": "image/png"})
    await private.upload("logo.png", b"png", {"content-type": "image/png"})
    async with httpx.AsyncClient() as http:
        served = await http.get(await public.get_public_url("logo.png"))
        refused = await http.get(await private.get_public_url("logo.png"))
    assert (served.status_code, served.content, served.headers["content-type"]) == (200, b"png", "image/png")
    assert refused.status_code == 400 and refused.json()["statusCode"] == "404"


async def test_signed_url_downloads_with_plain_http(service_storage: AsyncStorageClient,
                                                    make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    await bucket.upload("folder/voice.ogg", b"ogg bytes", {"content-type": "audio/ogg"})
    signed = await bucket.create_signed_url("folder/voice.ogg", 60)
    attachment = await bucket.create_signed_url("folder/voice.ogg", 60, {"download": "v.ogg"})
    async with httpx.AsyncClient() as http:
        answer = await http.get(signed["signedURL"])
        downloaded = await http.get(attachment["signedURL"])
    assert (answer.status_code, answer.content, answer.headers["content-type"]) == (200, b"ogg bytes", "audio/ogg")
    assert downloaded.headers["content-disposition"] == "attachment; filename*=UTF-8''v.ogg"


async def test_signed_urls_for_several_paths_mark_the_missing(service_storage: AsyncStorageClient,
                                                             make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    await bucket.upload("a.txt", b"a")
    signed = await bucket.create_signed_urls(["a.txt", "missing.txt"], 60)
    async with httpx.AsyncClient() as http:
        assert (await http.get(signed[0]["signedURL"])).content == b"a"
    assert (signed[0]["error"], signed[1]["signedURL"]) == (None, None)
    assert signed[1]["error"]


async def test_signing_a_missing_object_is_not_found(service_storage: AsyncStorageClient,
                                                     make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    with pytest.raises(StorageApiError) as raised:
        await bucket.create_signed_url("missing.txt", 60)
    assert (raised.value.status, raised.value.code) == ("404", "not_found")


async def test_list_shows_one_level_with_folders_first(service_storage: AsyncStorageClient,
                                                       make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    for name in ("top.txt", "docs/a.txt", "docs/b.txt", "docs/deep/c.txt", "img/x.png"):
        await bucket.upload(name, b"x")
    root = await bucket.list()
    docs = await bucket.list("docs")
    assert [(item["name"], item["id"] is None) for item in root] == \
        [("docs", True), ("img", True), ("top.txt", False)]
    assert [item["name"] for item in docs] == ["deep", "a.txt", "b.txt"]
    assert docs[1]["metadata"]["size"] == 1 and docs[1]["metadata"]["mimetype"].startswith("text/plain")
    assert [item["name"] for item in await bucket.list("docs", {"limit": 1, "offset": 1})] == ["a.txt"]
    assert [item["name"] for item in await bucket.list("docs", {"search": "b"})] == ["b.txt"]
    assert [item["name"] for item in await bucket.list("docs/", {"sortBy": {"column": "name", "order": "desc"}})] \
        == ["deep", "b.txt", "a.txt"]


async def test_list_search_is_no_wildcard(service_storage: AsyncStorageClient, make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    await bucket.upload("ab.txt", b"x")
    assert await bucket.list("", {"search": "%"}) == []
    assert await bucket.list("", {"search": "_b"}) == []


async def test_info_and_exists(service_storage: AsyncStorageClient, make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    await bucket.upload("a.json", b"{}", {"content-type": "application/json", "metadata": {"chat": "42"}})
    info = await bucket.info("a.json")
    assert (info["name"], info["size"], info["content_type"], info["metadata"]) == \
        ("a.json", 2, "application/json", {"chat": "42"})
    assert await bucket.exists("a.json") is True
    assert await bucket.exists("b.json") is False


async def test_move_and_copy(service_storage: AsyncStorageClient, make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    await bucket.upload("a.txt", b"moved bytes")
    assert await bucket.move("a.txt", "dir/b.txt") == {"message": "Successfully moved"}
    copied = await bucket.copy("dir/b.txt", "dir/c.txt")
    assert copied["Key"].endswith("/dir/c.txt")
    assert await bucket.download("dir/b.txt") == await bucket.download("dir/c.txt") == b"moved bytes"
    assert await bucket.exists("a.txt") is False
    with pytest.raises(StorageApiError) as raised:
        await bucket.copy("dir/b.txt", "dir/c.txt")
    assert raised.value.status == "409"
    with pytest.raises(StorageApiError) as missing:
        await bucket.move("nothing.txt", "x.txt")
    assert missing.value.status == "404"


async def test_remove_deletes_rows_and_files(service_storage: AsyncStorageClient, make_bucket: BucketFactory,
                                             state_dir: Path) -> None:
    bucket = service_storage.from_(await make_bucket())
    before = stored_files(state_dir)
    await bucket.upload("a.txt", b"a")
    await bucket.upload("b/c.txt", b"c")
    removed = await bucket.remove(["a.txt", "b/c.txt", "never.txt"])
    assert sorted(item["name"] for item in removed) == ["a.txt", "b/c.txt"]
    assert await bucket.list() == []
    assert stored_files(state_dir) == before


async def test_bucket_limits_are_enforced_without_leaving_a_file_or_row(
        service_storage: AsyncStorageClient, make_bucket: BucketFactory, state_dir: Path) -> None:
    bucket = service_storage.from_(await make_bucket(file_size_limit=1000, allowed_mime_types=["image/*"]))
    before = stored_files(state_dir)
    with pytest.raises(StorageApiError) as too_large:
        await bucket.upload("big.png", b"x" * 5000, {"content-type": "image/png"})
    with pytest.raises(StorageApiError) as wrong_type:
        await bucket.upload("doc.pdf", b"x", {"content-type": "application/pdf"})
    await bucket.upload("ok.png", b"x" * 1000, {"content-type": "image/png"})
    assert (too_large.value.status, too_large.value.code) == ("413", "Payload too large")
    assert (wrong_type.value.status, wrong_type.value.code) == ("415", "invalid_mime_type")
    assert [item["name"] for item in await bucket.list()] == ["ok.png"]
    assert len(stored_files(state_dir) - before) == 1


async def test_raw_body_upload_takes_its_content_type(make_bucket: BucketFactory, api_server: str,
                                                      service_storage: AsyncStorageClient,
                                                      local_keys) -> None:  # type: ignore[no-untyped-def]
    bucket_id = await make_bucket()
    headers = {"apikey": local_keys.service_role_key,
               "Authorization": f"Bearer {local_keys.service_role_key}", "content-type": "image/jpeg"}
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{api_server}/storage/v1/object/{bucket_id}/p.jpg", content=b"jpeg",
                                 headers=headers)
    assert answer.status_code == 200 and answer.json()["Key"] == f"{bucket_id}/p.jpg"
    assert (await service_storage.from_(bucket_id).info("p.jpg"))["content_type"] == "image/jpeg"


async def test_a_large_object_streams_back_whole(service_storage: AsyncStorageClient,
                                                 make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    data = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32 + 7)  # over 3 MiB: many read chunks
    await bucket.upload("big.bin", data, {"content-type": "application/octet-stream"})
    assert await bucket.download("big.bin") == data


async def test_head_answers_the_headers_without_the_body(service_storage: AsyncStorageClient,
                                                         make_bucket: BucketFactory, api_server: str,
                                                         local_keys) -> None:  # type: ignore[no-untyped-def]
    bucket_id = await make_bucket()
    await service_storage.from_(bucket_id).upload("a.txt", b"12345", {"content-type": "text/plain"})
    service = {"apikey": local_keys.service_role_key, "Authorization": f"Bearer {local_keys.service_role_key}"}
    async with httpx.AsyncClient() as http:
        answer = await http.head(f"{api_server}/storage/v1/object/authenticated/{bucket_id}/a.txt", headers=service)
        missing = await http.head(f"{api_server}/storage/v1/object/authenticated/{bucket_id}/b.txt", headers=service)
    assert (answer.status_code, answer.headers["content-length"], answer.content) == (200, "5", b"")
    assert (missing.status_code, missing.content) == (400, b"")


async def test_range_requests_get_partial_content(service_storage: AsyncStorageClient, make_bucket: BucketFactory,
                                                  api_server: str, local_keys) -> None:  # type: ignore[no-untyped-def]
    bucket_id = await make_bucket()
    await service_storage.from_(bucket_id).upload("v.mp4", b"0123456789", {"content-type": "video/mp4"})
    url = f"{api_server}/storage/v1/object/authenticated/{bucket_id}/v.mp4"
    auth = {"apikey": local_keys.service_role_key, "Authorization": f"Bearer {local_keys.service_role_key}"}
    async with httpx.AsyncClient() as http:
        middle = await http.get(url, headers={**auth, "Range": "bytes=2-4"})
        tail = await http.get(url, headers={**auth, "Range": "bytes=-3"})
        past = await http.get(url, headers={**auth, "Range": "bytes=20-"})
        several = await http.get(url, headers={**auth, "Range": "bytes=0-1,4-5"})
    assert (middle.status_code, middle.content, middle.headers["content-range"]) == (206, b"234", "bytes 2-4/10")
    assert (tail.status_code, tail.content) == (206, b"789")
    assert past.status_code == 400 and past.json()["statusCode"] == "416"
    assert (several.status_code, several.content) == (200, b"0123456789")


async def test_uploaded_html_is_served_sandboxed(service_storage: AsyncStorageClient,
                                                 make_bucket: BucketFactory) -> None:
    bucket = service_storage.from_(await make_bucket())
    await bucket.upload("page.html", b"<script>steal()</script>", {"content-type": "text/html"})
    signed = await bucket.create_signed_url("page.html", 60)
    async with httpx.AsyncClient() as http:
        answer = await http.get(signed["signedURL"])
    assert answer.headers["content-security-policy"] == "sandbox"
    assert answer.headers["x-content-type-options"] == "nosniff"
