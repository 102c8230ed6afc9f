"""Object names and bucket ids: what is taken as it is and what is refused as InvalidKey / Bucket name invalid."""

from __future__ import annotations

import pytest

from supabase_local.storage.errors import StorageError
from supabase_local.storage.paths import check_bucket_id, check_object_name, check_prefix


@pytest.mark.parametrize("name", ["a.txt", "org/uploads/user/photo 1.jpg", "документ.pdf", "a/b/c/d.e.f",
                                  "x" * 1024, "(1)!$&'*+,;=:@"])
def test_valid_names_are_kept_as_they_are(name: str) -> None:
    assert check_object_name(name) == name


@pytest.mark.parametrize("name", ["", "/abs", "a//b", "a/", ".", "..", "../x", "a/./b", "a/../b", "a\\b",
                                  "a\x00b", "a\nb", "a\x7fb", "x" * 1025, "ж" * 513, "\ud800"])
def test_bad_names_are_invalid_keys(name: str) -> None:
    with pytest.raises(StorageError) as raised:
        check_object_name(name)
    assert (raised.value.status, raised.value.error) == (400, "InvalidKey")
    assert "\n" not in raised.value.message and "\x00" not in raised.value.message


@pytest.mark.parametrize("bucket_id", ["", ".", "..", "a/b", "a\\b", "x" * 101, "ünicode", None, 7])
def test_bad_bucket_ids_are_refused(bucket_id: object) -> None:
    with pytest.raises(StorageError) as raised:
        check_bucket_id(bucket_id)
    assert raised.value.error == "Invalid Input"


def test_prefixes_end_with_one_slash() -> None:
    assert [check_prefix(value) for value in (None, "", "a", "a/", "a/b/")] == ["", "", "a/", "a/", "a/b/"]
    with pytest.raises(StorageError):
        check_prefix("../a")

