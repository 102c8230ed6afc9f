"""Turning a request's body, query or path into a validated model, or into a 4xx naming the field at fault.

The only place pydantic's errors become the contract's VALIDATION_ERROR shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic
from starlette.requests import Request

from crm_server.errors import MalformedBodyError, PayloadTooLargeError, ValidationError
from safeguards.request_body import BodyTooLarge, read_body

Model = TypeVar("Model", bound=pydantic.BaseModel)

# Every route's body is a small JSON object: the largest, a send, is a text of at most 4,096 characters (up to
# 24 KB as JSON escapes) and a file URL of at most 2,048.
MAX_BODY_BYTES = 64 * 1024


def _field_of(error: Mapping[str, Any]) -> str:
    location = [part for part in error.get("loc", ()) if isinstance(part, str)]
    return location[0] if location else "body"


def _describe(error: Mapping[str, Any], field: str) -> str:
    if error.get("type") == "missing":
        return f"`{field}` is required"
    message = str(error.get("msg", "is invalid"))
    # pydantic prefixes custom errors with "Value error, "; the field name says it better.
    message = message.removeprefix("Value error, ")
    return f"`{field}`: {message}"


def validate(model: type[Model], data: Any, *, prefix: str = "") -> Model:
    """`data` as `model`; `prefix` names where a nested object sits in its body (e.g. "media.")."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = prefix + _field_of(first)
        raise ValidationError(_describe(first, field), field=field) from None


async def parse_body(request: Request, model: type[Model], *, limit: int = MAX_BODY_BYTES,
                     too_large_field: str = "body") -> Model:
    """The body as `model`; a route whose body carries a file raises `limit` and names that file's field."""
    return validate(model, await read_json_object(request, limit=limit, too_large_field=too_large_field))


async def read_json_object(request: Request, *, limit: int = MAX_BODY_BYTES, too_large_field: str = "body"
                           ) -> dict[str, Any]:
    """The body as a JSON object, not yet validated: for a route whose body has more than one shape."""
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge as exc:
        raise PayloadTooLargeError(f"The request body is larger than {exc.limit} bytes",
                                   field=too_large_field) from None
    # Kept for a forward to the account's holder (crm_server.cluster.forwarding): the stream is consumed now.
    request.state.raw_body = raw
    if not raw.strip():
        raise MalformedBodyError("A JSON object body is required", field="body")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser's recursion limit is refused like any bad JSON.
        raise MalformedBodyError("The body is not valid JSON", field="body") from None
    if not isinstance(data, dict):
        raise MalformedBodyError("The body must be a JSON object", field="body")
    return data


def parse_query(request: Request, model: type[Model]) -> Model:
    # Repeated parameters are ambiguous; the first one wins, as in most frameworks.
    return validate(model, {key: request.query_params[key] for key in request.query_params})


def parse_path(request: Request, model: type[Model]) -> Model:
    return validate(model, dict(request.path_params))
