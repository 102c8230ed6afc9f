"""Logging as every process of ours sets it up: one level, URLs whose query values are redacted, and no message
texts or whole phone numbers unless payloads are asked for (`--log-payloads`).

Query strings carry secrets and data: crm_server posts to `…/telegram-crm-webhook?key=<webhook key>`, supabase-py
looks integrations up by `webhook_key=eq.<key>`, REST filters name phones and texts. httpx logs every request's URL
at INFO and uvicorn's access log every path, so their query values become `***` (the names stay, for debugging).
Message texts reached the logs through aiosqlite, which logs every statement with its parameters at DEBUG (an
outbox row is an incoming message); records below INFO of such loggers are dropped unless payloads are wanted.
Phone numbers are personal data of the account's owner and of their clients: crm_server names accounts by phone in
its INFO lines ("account %s: connection lost"), so a phone argument is logged as `+***4567` — its last four digits
tell an operator's accounts apart, the whole number is in the store for whoever may read it.
"""

from __future__ import annotations

import logging
import re
import sys

import httpx

REDACTED = "***"
# Loggers whose records carry request URLs or paths among their arguments.
URL_LOGGERS = ("httpx", "uvicorn.access")
# Loggers that put statement parameters (message texts, phones) into their DEBUG records.
PAYLOAD_LOGGERS = ("aiosqlite", "sqlalchemy.engine.Engine")


def redact_query(url: str) -> str:
    """`url` with every query value replaced: `/p?key=s3cret&limit=1` is `/p?key=***&limit=***`."""
    path, sep, query = url.partition("?")
    if not sep:
        return url
    query, hash_sign, _ = query.partition("#")
    parts = [f"{part.partition('=')[0]}={REDACTED}" if "=" in part else REDACTED for part in query.split("&")
             if part]
    return f"{path}?{'&'.join(parts)}" + (f"#{REDACTED}" if hash_sign else "")


class ArgumentRewrite(logging.Filter):
    """Rewrites each argument of a record (`rewritten`) before any handler formats it, so caplog, files and
    consoles all get the rewritten form."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(self.rewritten(arg) for arg in record.args)
        return True

    def rewritten(self, arg: object) -> object:
        return arg


class QueryStringRedaction(ArgumentRewrite):
    """The URL arguments of a record (httpx's `URL`s, uvicorn's `/path?query` strings) with their query values
    redacted."""

    def rewritten(self, arg: object) -> object:
        return _redacted(arg)


def _redacted(arg: object) -> object:
    if isinstance(arg, httpx.URL):
        return redact_query(str(arg))
    if isinstance(arg, str) and "?" in arg and arg.startswith(("/", "http://", "https://")):
        return redact_query(arg)
    return arg


class PayloadRecordsDropped(logging.Filter):
    """Drops a payload logger's records below INFO: the ones that dump statements with their parameters."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


# As crm_server normalizes them (`crm_server.telegram.recipients.normalize_phone`): `+` and 5 to 15 digits.
_PHONE = re.compile(r"\+\d{5,15}")


def mask_phone(phone: str) -> str:
    """`+15551234567` is `+***4567`."""
    return f"+{REDACTED}{phone[-4:]}"


class PhoneMasking(ArgumentRewrite):
    """Masks every argument of a record that is a whole phone number, whatever logger made it (a handler's filter:
    a logger's filter would not see its children's records)."""

    def rewritten(self, arg: object) -> object:
        return mask_phone(arg) if isinstance(arg, str) and _PHONE.fullmatch(arg) else arg


def mask_phones(handler: logging.Handler) -> None:
    """Idempotent: `handler` writes phone arguments masked."""
    if not any(isinstance(existing, PhoneMasking) for existing in handler.filters):
        handler.addFilter(PhoneMasking())


def _install(logger_names: tuple[str, ...], kind: type[logging.Filter]) -> None:
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, kind) for existing in logger.filters):
            logger.addFilter(kind())


def redact_query_strings() -> None:
    """Idempotent; every process that makes or serves HTTP requests calls it before its first one."""
    _install(URL_LOGGERS, QueryStringRedaction)


def keep_payloads_out() -> None:
    """Idempotent; not called when payloads are asked for (`--log-payloads`)."""
    _install(PAYLOAD_LOGGERS, PayloadRecordsDropped)


def configure_logging(level: str, *, log_payloads: bool = False,
                      fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """A process's logging: `level` for everything on stderr, query values redacted, payloads (message texts,
    whole phones) only if asked."""
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr)
    redact_query_strings()
    if not log_payloads:
        keep_payloads_out()
        for handler in logging.getLogger().handlers:
            mask_phones(handler)
