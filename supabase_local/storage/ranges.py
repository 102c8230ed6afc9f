"""The one byte range of a `Range: bytes=…` request header a download answers with 206, as S3 behind Storage does.

Several ranges or a header this does not understand get the whole object (RFC 9110 lets a server ignore Range);
a range wholly past the end is 416.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from supabase_local.storage.errors import StorageError

_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    if not header:
        return None
    match = _SINGLE_RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            raise unsatisfiable()
        return ByteRange(max(size - suffix, 0), size - 1) if size else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        raise unsatisfiable()
    if end < start:
        return None
    return ByteRange(start, end)


def unsatisfiable() -> StorageError:
    return StorageError(416, "invalid_range", "invalid range provided", "InvalidRange")
