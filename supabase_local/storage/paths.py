"""Which bucket ids and object names the API takes: pure checks, each refusal a 400 in Storage's shape.

Names never reach the filesystem (files are stored by version, see files.py); these rules keep keys S3-valid
and unambiguous, so `a/./b`, `a//b`, `/abs` or `../x` cannot name the same object two ways or look like a path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from supabase_local.storage.errors import StorageError, invalid_bucket_name, invalid_key

# S3's limit on a key, in UTF-8 bytes; hosted Storage refuses longer names too.
MAX_KEY_BYTES = 1024
MAX_BUCKET_ID_CHARS = 100
# Storage's bucket name characters (word characters and a few marks), without "/" of course.
_BUCKET_ID = re.compile(r"[\w!\-.*'() &$@=;:+,?]+", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_bucket_id(bucket_id: object) -> str:
    if (not isinstance(bucket_id, str) or not _BUCKET_ID.fullmatch(bucket_id)
            or len(bucket_id) > MAX_BUCKET_ID_CHARS or bucket_id in (".", "..")):
        raise invalid_bucket_name()
    return bucket_id


def check_object_name(name: object) -> str:
    """A key of one or more non-empty segments, none of them `.` or `..`, no control characters or backslashes."""
    if not isinstance(name, str) or not name:
        raise invalid_key("" if not isinstance(name, str) else name)
    shown = _CONTROL.sub("?", name)[:200]  # the message echoes the key; never a control character into a log
    if _CONTROL.search(name) or "\\" in name or len(name.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise invalid_key(shown)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate from a %-escape
        raise invalid_key(shown) from exc
    if any(segment in ("", ".", "..") for segment in name.split("/")):
        raise invalid_key(shown)
    return name


def check_prefix(prefix: object) -> str:
    """A listing prefix: "" (the bucket's root) or folders as in a key, with or without the closing "/"."""
    if prefix is None or prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise StorageError(400, "InvalidRequest", "prefix must be a string")
    return check_object_name(prefix.removesuffix("/")) + "/"


def target_of(path_params: Mapping[str, Any]) -> tuple[str, str]:
    """The (bucket id, object name) of a route's `{bucket}/{path}`, both checked."""
    return check_bucket_id(path_params["bucket"]), check_object_name(path_params["path"])
