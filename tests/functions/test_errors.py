"""How crm_server's error answers reach our caller: statuses, codes, Retry-After, and which ones allow a failover."""

from __future__ import annotations

import pytest

from crm_server import errors as crm_server_errors
from functions._shared.errors import (
    CRM_SERVER_KNOWN_CODES,
    STATUS_CLASS_MESSAGES,
    crm_server_error,
    error_body,
    retry_after_seconds,
)


@pytest.mark.parametrize(("status", "code", "expected_status", "retryable"), [
    (404, "ACCOUNT_NOT_FOUND", 404, False),
    (409, "ACCOUNT_NOT_AUTHORIZED", 409, False),
    (422, "RECIPIENT_NOT_FOUND", 422, False),
    (403, "RECIPIENT_PRIVACY", 403, False),
    (429, "FLOOD_WAIT", 429, False),
    (502, "TELEGRAM_ERROR", 502, True),
    (503, "ACCOUNT_DISCONNECTED", 503, True),
    (500, "INTERNAL_ERROR", 502, True),
    (418, None, 502, False),
])
def test_server_errors_map_to_clear_answers(status: int, code: str | None, expected_status: int,
                                            retryable: bool) -> None:
    error = crm_server_error(status, code)
    assert (error.status_code, error.retryable) == (expected_status, retryable)
    assert error.message in {type(error).default_message, *STATUS_CLASS_MESSAGES.values()}  # fixed, never theirs


@pytest.mark.parametrize(("status", "code"), [(401, "UNAUTHORIZED"), (403, "PROJECT_FORBIDDEN")])
def test_the_servers_auth_refusals_are_502_not_the_callers_401(status: int, code: str) -> None:
    error = crm_server_error(status, code)
    assert (error.status_code, error.code) == (502, "CRM_SERVER_AUTH_FAILED")
    assert error_body(error)["upstreamCode"] == code


def test_flood_wait_keeps_retry_after() -> None:
    error = crm_server_error(429, "FLOOD_WAIT", retry_after_seconds("41.2"))
    assert error.headers() == {"Retry-After": "42"}
    assert error_body(error) == {"success": False, "error": error.message, "code": "FLOOD_WAIT"}
    assert "42 s" in error.message


def test_every_code_crm_server_answers_with_is_known() -> None:
    declared = {value.code for value in vars(crm_server_errors).values()
                if isinstance(value, type) and issubclass(value, crm_server_errors.CrmError)}
    assert declared <= CRM_SERVER_KNOWN_CODES


@pytest.mark.parametrize("status", [400, 404, 409, 429, 500, 503])
def test_a_code_that_is_not_crm_servers_is_dropped(status: int) -> None:
    error = crm_server_error(status, "SOMEONE_ELSES_CODE")
    assert error.upstream_code is None and "SOMEONE_ELSES_CODE" not in str(error_body(error))


def test_unreadable_retry_after_is_dropped() -> None:
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
