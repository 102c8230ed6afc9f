"""The Storage API's one error type and the errors it answers, shaped as Supabase Storage renders them.

Hosted Storage sends `{statusCode, error, message}` (statusCode a string: "404", "409", ...) with HTTP status 400
for every client error and 500 for its own faults; storage3 reads `error` and `statusCode` from the body.
"""

from __future__ import annotations

import json
import logging

from starlette.responses import Response


class StorageError(Exception):
    """`status` is the statusCode in the body; `error` is Storage's (backwards compatible) error name."""

    def __init__(self, status: int, error: str, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.code = code or error

    @property
    def http_status(self) -> int:
        # Storage's error handler: 500 stays 500, any other status of its own errors is answered as 400.
        return 500 if self.status >= 500 else 400

    def body(self) -> dict[str, str]:
        return {"statusCode": str(self.status), "code": self.code, "error": self.error, "message": self.message}

    def response(self, include_body: bool = True) -> Response:
        content = json.dumps(self.body()) if include_body else b""
        return Response(content, status_code=self.http_status, media_type="application/json; charset=utf-8")


def no_such_bucket() -> StorageError:
    return StorageError(404, "Bucket not found", "Bucket not found", "NoSuchBucket")


def no_such_key() -> StorageError:
    # storage3's `exists()` reads exactly this pair (404, not_found) as "no such object".
    return StorageError(404, "not_found", "Object not found", "NoSuchKey")


def key_already_exists() -> StorageError:
    return StorageError(409, "Duplicate", "The resource already exists", "KeyAlreadyExists")


def bucket_already_exists() -> StorageError:
    return StorageError(409, "Duplicate", "The resource already exists", "BucketAlreadyExists")


def bucket_not_empty() -> StorageError:
    return StorageError(409, "ResourceNotEmpty", "The bucket you tried to delete is not empty")


def access_denied(message: str = "new row violates row-level security policy") -> StorageError:
    return StorageError(403, "Unauthorized", message, "AccessDenied")


def invalid_jwt(message: str = "Invalid JWT") -> StorageError:
    return StorageError(400, "InvalidJWT", message)


def invalid_signature(message: str = "The url do not match the signature") -> StorageError:
    return StorageError(400, "InvalidSignature", message)


def invalid_key(key: str) -> StorageError:
    return StorageError(400, "InvalidKey", f"Invalid key: {key}")


def invalid_bucket_name() -> StorageError:
    return StorageError(400, "Invalid Input", "Bucket name invalid", "InvalidBucketName")


def invalid_request(message: str) -> StorageError:
    """A body or parameter the operation cannot take; the message names the field."""
    return StorageError(400, "InvalidRequest", message)


def entity_too_large(limit: int) -> StorageError:
    return StorageError(413, "Payload too large", f"The object exceeded the maximum allowed size ({limit} bytes)",
                        "EntityTooLarge")


def invalid_mime_type(mime_type: str) -> StorageError:
    return StorageError(415, "invalid_mime_type", f"mime type {mime_type} is not supported", "InvalidMimeType")


def internal_error() -> StorageError:
    return StorageError(500, "Internal", "Internal Server Error", "InternalError")


logger = logging.getLogger("supabase_local.storage")
