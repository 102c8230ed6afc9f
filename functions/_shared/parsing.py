"""Parsing at the edge, shared by every function: a body as a JSON object, a JSON object as a request model (or a
422 naming the field), and the Idempotency-Key header.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, ValidationError

from functions._shared.errors import MalformedBodyError, ValidationFailedError

MAX_TEXT_LENGTH = 4096
MAX_IDEMPOTENCY_KEY_LENGTH = 200
ModelT = TypeVar("ModelT", bound=BaseModel)


class RequestModel(BaseModel):
    """Wire models ignore unknown fields, as the contract says."""

    model_config = ConfigDict(extra="ignore")


def parse_json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null", object_hook=_without_nul_characters)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's recursion limit is refused like any bad JSON.
        raise MalformedBodyError("The request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise MalformedBodyError()
    return data


def _without_nul_characters(data: dict[str, Any]) -> dict[str, Any]:
    """PostgreSQL text cannot hold U+0000: every string of a request loses its NUL characters here, at the edge,
    instead of failing as a database error after the work is done (a sent message left unstored, a webhook the
    sender retries for a day). They carry no meaning in a chat message or a name."""
    return {_strip_nul(key): _strip_nul(value) for key, value in data.items()}


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, list):
        return [_strip_nul(item) for item in value]
    return value


def validate_model(model: type[ModelT], data: dict[str, Any], context: dict[str, Any] | None = None) -> ModelT:
    """`data` as `model`, or a 422 naming the first field at fault."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise _validation_failed(exc) from exc


def _validation_failed(exc: ValidationError) -> ValidationFailedError:
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ())]
    field = location[0] if location else None
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    if error.get("type") == "missing":
        return ValidationFailedError(f"{field} is required", field=field)
    if field is None:
        # A check across fields ("text or fileUrl is required") names the first field it mentions.
        field = message.split(" ", 1)[0]
        return ValidationFailedError(message, field=field)
    return ValidationFailedError(f"{field}: {message}", field=field)


def idempotency_key(headers: Mapping[str, str]) -> str:
    """The caller's `Idempotency-Key` (a retried request then sends and stores once), else a fresh one."""
    given = headers.get("idempotency-key")
    if given is None:
        return str(uuid4())
    given = given.strip()
    if not given or len(given) > MAX_IDEMPOTENCY_KEY_LENGTH or not given.isascii() or not given.isprintable():
        raise ValidationFailedError(f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII "
                                    f"characters", field="Idempotency-Key")
    return given
