"""An upload's body, streamed to a pending file: multipart/form-data as storage3 sends it (the `file` part, the
`cacheControl` and `metadata` fields), or the raw bytes with their own Content-Type, as other clients send them.

The object's bytes are never held whole in memory and never past `limit`: the count stops the upload mid-stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import Request

from supabase_local.storage.errors import StorageError, entity_too_large, invalid_request
from supabase_local.storage.files import PendingFile

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# The form fields beside the file (cacheControl, metadata) are small; a larger one is not an upload we know.
MAX_FIELD_BYTES = 64 * 1024
# Room for a multipart body's boundaries and part headers beyond the file itself.
MULTIPART_OVERHEAD_BYTES = MAX_FIELD_BYTES * 2


@dataclass
class Upload:
    content_type: str
    cache_control: str | None
    user_metadata: dict[str, Any] | None


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    value: bytearray = field(default_factory=bytearray)


def _cache_control(value: str | None) -> str | None:
    """storage3 sends seconds ("3600"), stored as Storage stores it: `max-age=3600`."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return f"max-age={int(value)}"
    if len(value) > 256 or any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise invalid_request("cacheControl must be a number of seconds or a Cache-Control value")
    return value


def _user_metadata(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise invalid_request("metadata must be a JSON object") from exc
    if not isinstance(parsed, dict):
        raise invalid_request("metadata must be a JSON object")
    return parsed


def _content_type(value: str | None) -> str:
    value = (value or "").strip()
    if not value or len(value) > 256 or any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        return DEFAULT_CONTENT_TYPE
    return value


async def receive_upload(request: Request, pending: PendingFile, limit: int) -> Upload:
    """Fill `pending` with the object's bytes; raises StorageError (413 past `limit`, 400 for a bad form)."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    declared = request.headers.get("content-length", "")
    if content_type == b"multipart/form-data":
        if declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
            raise entity_too_large(limit)
        return await _receive_multipart(request, options.get(b"boundary"), pending, limit)
    if declared.isdigit() and int(declared) > limit:
        raise entity_too_large(limit)
    async for chunk in request.stream():
        if pending.size + len(chunk) > limit:
            raise entity_too_large(limit)
        pending.write(chunk)
    return Upload(_content_type(request.headers.get("content-type")),
                  _cache_control(request.headers.get("cache-control")),
                  _user_metadata(request.headers.get("x-metadata")))


async def _receive_multipart(request: Request, boundary: bytes | None, pending: PendingFile, limit: int) -> Upload:
    if not boundary:
        raise invalid_request("multipart/form-data without a boundary")
    parts: list[_Part] = []
    current = _Part()
    header_field = bytearray()
    header_value = bytearray()
    failure: list[StorageError] = []
    files_seen = 0

    def on_part_begin() -> None:
        nonlocal current
        current = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current.headers[header_field.decode("latin-1").lower()] = header_value.decode("latin-1")
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal files_seen
        _, disposition = parse_options_header(current.headers.get("content-disposition"))
        current.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        # The first part with a file name is the object (storage3 names it `file`); later ones are refused.
        current.is_file = b"filename" in disposition
        if current.is_file:
            files_seen += 1
            if files_seen > 1:
                failure.append(invalid_request("the form carries more than one file"))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if failure:
            return
        chunk = data[start:end]
        if current.is_file:
            if pending.size + len(chunk) > limit:
                failure.append(entity_too_large(limit))
                return
            pending.write(chunk)
        elif len(current.value) + len(chunk) > MAX_FIELD_BYTES:
            failure.append(invalid_request(f"form field {current.name!r} is too large"))
        else:
            current.value.extend(chunk)

    def on_part_end() -> None:
        parts.append(current)

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if failure:
                raise failure[0]
        parser.finalize()
    except MultipartParseError as exc:
        raise invalid_request("the multipart/form-data body is malformed") from exc
    if failure:
        raise failure[0]
    if parser.state != MultipartState.END:
        raise invalid_request("the multipart/form-data body ends before its closing boundary")
    file_part = next((part for part in parts if part.is_file), None)
    if file_part is None:
        raise invalid_request("the form has no file part")
    fields = {part.name: part.value.decode("utf-8", "replace") for part in parts if not part.is_file}
    return Upload(_content_type(file_part.headers.get("content-type")),
                  _cache_control(fields.get("cacheControl")),
                  _user_metadata(fields.get("metadata")))
