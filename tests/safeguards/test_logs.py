"""Logs keep URLs' query names but never their values (webhook keys, filters), and statement parameters (message
texts, phones) only when payloads are asked for. The whole stack at DEBUG is checked by
tests/reliability/test_secrets.py; these are the rules one by one."""

from __future__ import annotations

import argparse
import logging

import httpx
import pytest

from crm_server.cli import add_commands, settings_from
from safeguards.logs import keep_payloads_out, mask_phones, redact_query, redact_query_strings

SECRET = "s3cret-webhook-key"


def test_query_values_are_redacted_and_their_names_kept() -> None:
    assert redact_query(f"http://127.0.0.1:54321/rest/v1/messenger_integrations?select=id&webhook_key=eq.{SECRET}"
                        "&limit=1") == ("http://127.0.0.1:54321/rest/v1/messenger_integrations"
                                        "?select=***&webhook_key=***&limit=***")
    assert redact_query(f"/functions/v1/telegram-crm-webhook?key={SECRET}") == "/functions/v1/telegram-crm-webhook?key=***"
    assert redact_query(f"/p?{SECRET}") == "/p?***"  # a bare value is a value
    assert redact_query("/health") == "/health"


async def test_httpx_logs_a_request_without_its_query_values(caplog: pytest.LogCaptureFixture) -> None:
    redact_query_strings()
    caplog.set_level(logging.DEBUG)
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post(f"http://127.0.0.1:54321/functions/v1/telegram-crm-webhook?key={SECRET}")
    lines = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert lines == ['HTTP Request: POST http://127.0.0.1:54321/functions/v1/telegram-crm-webhook?key=*** '
                     '"HTTP/1.1 200 OK"']
    assert SECRET not in caplog.text


def test_an_access_log_line_carries_no_query_value() -> None:
    redact_query_strings()
    logger = logging.getLogger("uvicorn.access")
    # As uvicorn logs it: client, method, path with query, HTTP version, status.
    record = logger.makeRecord("uvicorn.access", logging.INFO, __file__, 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "POST", f"/functions/v1/telegram-crm-webhook?key={SECRET}", "1.1",
                                200), None)
    assert logger.filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "POST /functions/v1/telegram-crm-webhook?key=*** HTTP/1.1" 200'


def test_statement_parameters_at_debug_are_dropped_and_other_records_kept() -> None:
    keep_payloads_out()
    logger = logging.getLogger("aiosqlite")
    statement = logger.makeRecord("aiosqlite", logging.DEBUG, __file__, 0, "executing %s",
                                  ("partial(execute, 'INSERT INTO outbox …', ('a message text',))",), None)
    closing = logger.makeRecord("aiosqlite", logging.INFO, __file__, 0, "exception occurred while closing", (), None)
    assert not logger.filter(statement)
    assert logger.filter(closing)


def test_crm_server_logs_payloads_only_when_asked() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    assert settings_from(parser.parse_args(["server"])).log_payloads is False
    assert settings_from(parser.parse_args(["server", "--log-payloads"])).log_payloads is True


def test_a_phone_argument_is_written_masked_by_any_logger_through_the_handler() -> None:
    handler = logging.Handler()
    mask_phones(handler)
    mask_phones(handler)  # idempotent
    assert len(handler.filters) == 1
    logger = logging.getLogger("crm_server.telegram.account")  # a child: a logger filter on crm_server misses it
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "account %s of project %s: %d messages",
                               ("+15551234567", "org-1", 15551234567), None)
    assert handler.filter(record)
    assert record.getMessage() == "account +***4567 of project org-1: 15551234567 messages"
    # Only a whole phone is one: a text holding digits, or a short number, is left alone.
    other = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "%s %s", ("call +15551234567 now", "+1234"),
                              None)
    assert handler.filter(other) and other.getMessage() == "call +15551234567 now +1234"
