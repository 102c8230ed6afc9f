"""Reading a receiver's answer to a batch: `{results: [{event_id, ok, duplicate?, error?: {code, message}, retry?}]}`
into one `Outcome` per event of the batch.

Pure, so what each answer means is tested without a network. Nothing the receiver wrote is trusted beyond its
shape: an event it does not answer for (or an answer that is no valid `results`) is retried, never taken as
delivered, and of an error only a machine code is kept (its message could be anything, and operators read it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crm_server.webhooks.policy import Outcome, RetrySchedule, Verdict

# An answer of 500 results is some 50 KB; anything far beyond is no answer of ours to read.
MAX_ANSWER_BYTES = 1 << 20
_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")


@dataclass(frozen=True)
class EventAnswer:
    """What the receiver said of one event."""

    ok: bool
    retry: bool = False
    code: str = ""  # its machine code, when it gave one in the contract's shape


def machine_code(value: Any) -> str:
    """`value` when it is a machine code (`UPPER_SNAKE`), else empty."""
    return value if isinstance(value, str) and _CODE.fullmatch(value) else ""


def _answer(item: Any) -> tuple[str, EventAnswer] | None:
    if not isinstance(item, dict):
        return None
    event_id, ok, retry = item.get("event_id"), item.get("ok"), item.get("retry", False)
    if not isinstance(event_id, str) or not isinstance(ok, bool) or not isinstance(retry, bool):
        return None
    error = item.get("error")
    code = machine_code(error.get("code")) if isinstance(error, dict) else ""
    return event_id, EventAnswer(ok=ok, retry=retry and not ok, code=code)


def read_answers(body: bytes | None) -> dict[str, EventAnswer] | None:
    """The answers by event id (the first one of an event counts), or None when the body is no `results` list."""
    if body is None or len(body) > MAX_ANSWER_BYTES:
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    results = document.get("results") if isinstance(document, dict) else None
    if not isinstance(results, list):
        return None
    answers: dict[str, EventAnswer] = {}
    for item in results:
        read = _answer(item)
        if read is not None:
            answers.setdefault(*read)
    return answers


def outcomes(answers: dict[str, EventAnswer] | None, events: Sequence[tuple[str, int]],
             schedule: RetrySchedule) -> list[Outcome]:
    """One outcome per (event id, attempt) of the batch, in its order.

    `ok: false` without `retry` is a dead letter, as a single event's 4xx; `retry: true` waits the usual backoff;
    an event without a (valid) answer is retried the same way: the receiver may not have stored it.
    """
    judged = []
    for event_id, attempt in events:
        answer = answers.get(event_id) if answers is not None else None
        if answer is None:
            judged.append(Outcome(Verdict.RETRY, schedule.delay(attempt),
                                  "batch answer without this event" if answers is not None
                                  else "batch answer without valid results"))
        elif answer.ok:
            judged.append(Outcome(Verdict.DELIVERED))
        elif answer.retry:
            judged.append(Outcome(Verdict.RETRY, schedule.delay(attempt),
                                  "batch result: retry" + (f" {answer.code}" if answer.code else "")))
        else:
            judged.append(Outcome(Verdict.DEAD, error="batch result: rejected" + (f" {answer.code}"
                                                                                   if answer.code else "")))
    return judged
