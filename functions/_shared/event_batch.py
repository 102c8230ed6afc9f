"""A batch of webhook events (the contract's "Batched delivery"): its envelope, each event validated on its own (a
malformed one fails alone, naming its field), the files of its message events fetched concurrently, and one rpc
(`ingest_telegram_batch`) that stores the rest; the answer has one result per event, in the events' order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from pydantic import Field, field_validator

from functions._shared.errors import DatabaseError, FunctionError, ProjectMismatchError, ValidationFailedError
from functions._shared.event_context import EventContext
from functions._shared.event_fields import EventBase, phone_text
from functions._shared.event_message import WebhookPayload, incoming_params, message_answer
from functions._shared.event_outgoing import OutgoingEvent, outgoing_answer, outgoing_params
from functions._shared.event_types import EVENT_TYPES, MESSAGE, OUTGOING, StoredByRpc, event_type_of
from functions._shared.incoming_media import StoredFile
from functions._shared.media import IncomingMedia
from functions._shared.messages import TelegramKey, find_by_telegram_keys, ingest_batch
from functions._shared.parsing import RequestModel, validate_model
from functions._shared.rows import IngestResult

# The contract's bound on a batch (crm_server sends at most max_events, which connect sets far lower).
MAX_BATCH_EVENTS = 500
# Files fetched from crm_server and uploaded to Storage at once per batch: enough to overlap the round trips of a
# batch of photos, few enough that one batch cannot take every connection of crm_server's /media or of Storage.
MEDIA_CONCURRENCY = 4
# What the rpc needs besides the event's own parameters: it is given these once, for the whole batch.
BATCH_WIDE_PARAMS = ("p_organization_id", "p_integration_id")


class BatchEnvelope(RequestModel):
    """`{batch_id, project_id, account_phone?, events: [...]}`; each event is validated later, on its own."""

    batch_id: str = Field(min_length=1, max_length=200)
    project_id: UUID
    # The events' account when they do not name it (crm_server's batches are per account).
    account_phone: str | None = Field(None, max_length=40)
    events: list[Any] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)

    @field_validator("account_phone", mode="before")
    @classmethod
    def _account_phone_text(cls, value: object) -> object:
        return phone_text(value)


def is_batch(data: dict[str, Any]) -> bool:
    """A batch has `events` (or at least its `batch_id`); no single event has either."""
    return "events" in data or "batch_id" in data


@dataclass
class _Event:
    """One valid event of the batch on its way to the rpc."""

    index: int
    event_id: str | None
    kind: str
    event: EventBase
    stored: StoredFile | None = None

    @property
    def telegram_key(self) -> TelegramKey | None:
        """The key its message row has (message kinds only; None when a sender gave no id to dedupe by)."""
        if isinstance(self.event, WebhookPayload):
            external_id = self.event.external_message_id(self.event_id)
            if external_id is None:
                return None
            return self.event.account_phone, self.event.telegram_chat_id, external_id
        if isinstance(self.event, OutgoingEvent):
            return self.event.account_phone, self.event.telegram_chat_id, self.event.message_id
        return None


async def handle_batch(context: EventContext, envelope: BatchEnvelope) -> dict[str, Any]:
    if str(envelope.project_id) != context.organization_id:
        raise ProjectMismatchError(field="project_id")
    results: list[dict[str, Any] | None] = [None] * len(envelope.events)

    # parse: each event on its own; one that is malformed (or for another organization) is refused alone, for good
    events: list[_Event] = []
    for index, raw in enumerate(envelope.events):
        try:
            parsed = _parse_event(context, envelope, index, raw)
        except FunctionError as exc:
            results[index] = _failed(_raw_event_id(raw), exc, retry=False)
            continue
        if isinstance(parsed, _Event):
            events.append(parsed)
        else:
            results[index] = parsed

    # act: the message events' files, from crm_server into chat-media; redeliveries answered before any fetch
    events = await _store_media(context, events, results)

    # store: everything else in one round trip
    if events:
        stored = await ingest_batch(context.runtime.db, organization_id=context.organization_id,
                                    integration_id=context.integration.id,
                                    events=[_rpc_event(context, event) for event in events])
        for event in events:
            results[event.index] = _stored_result(event, stored.get(event.index))
    return {"success": True, "results": results}


def replayed_batch(answered: dict[str, Any]) -> dict[str, Any]:
    """A remembered batch answer, given again to its replay: every event stored then is a duplicate now."""
    return {**answered, "results": [{**result, "duplicate": True} if "duplicate" in result else result
                                    for result in answered["results"]]}


def _parse_event(context: EventContext, envelope: BatchEnvelope, index: int,
                 raw: object) -> _Event | dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationFailedError(f"events[{index}] must be a JSON object", field="events")
    # The envelope's project and account stand for the events', as in a single delivery's body.
    data = {"project_id": str(envelope.project_id), **raw}
    if envelope.account_phone is not None:
        data.setdefault("account_phone", envelope.account_phone)
    kind = event_type_of(data)
    if kind == MESSAGE:
        event: EventBase = validate_model(WebhookPayload, data)
    elif kind in EVENT_TYPES:
        event = validate_model(EVENT_TYPES[kind].model, data)
    else:
        # As for a single event of a type newer than this receiver: delivered, so it is neither retried nor a
        # dead letter.
        return {"event_id": _raw_event_id(raw), "ok": True, "ignored": True, "type": kind}
    context.check_project(event)
    return _Event(index, event.event_id, kind, event)


async def _store_media(context: EventContext, events: list[_Event],
                       results: list[dict[str, Any] | None]) -> list[_Event]:
    """The events whose files are in chat-media now (or that have none); the others' results are set: a redelivery
    is answered from its stored row (found for the whole batch in one query), a failed fetch or upload is
    `retry: true` (crm_server delivers that event again; a retry may well succeed)."""
    with_media = [event for event in events if _media_of(event) is not None]
    if not with_media:
        return events
    keys = {key for event in with_media if (key := event.telegram_key) is not None}
    earlier = await find_by_telegram_keys(context.runtime.db, organization_id=context.organization_id, keys=keys)
    # Two events of the batch with one key share one fetch (the rpc stores the second as a duplicate).
    fetches: dict[object, list[_Event]] = {}
    for event in with_media:
        key = event.telegram_key
        if key is not None and key in earlier:
            results[event.index] = _stored_result(event, earlier[key].model_dump())
            continue
        fetches.setdefault(key if key is not None else object(), []).append(event)

    limit = asyncio.Semaphore(MEDIA_CONCURRENCY)
    failed: set[int] = set()

    async def fetch(group: list[_Event]) -> None:
        first = group[0]
        media = _media_of(first)
        assert media is not None and isinstance(first.event, (WebhookPayload, OutgoingEvent))
        key = first.telegram_key
        async with limit:
            try:
                stored = await context.store_media(media, chat_id=first.event.telegram_chat_id,
                                                   message_id=key[2] if key else str(uuid4()))
            except FunctionError as exc:
                for event in group:
                    results[event.index] = _failed(event.event_id, exc, retry=True)
                    failed.add(event.index)
                return
        for event in group:
            event.stored = stored

    await asyncio.gather(*(fetch(group) for group in fetches.values()))
    answered = {event.index for event in with_media if results[event.index] is not None} | failed
    return [event for event in events if event.index not in answered]


def _media_of(event: _Event) -> IncomingMedia | None:
    if isinstance(event.event, (WebhookPayload, OutgoingEvent)):
        return event.event.media
    return None


def _rpc_event(context: EventContext, event: _Event) -> dict[str, Any]:
    """The event as ingest_telegram_batch takes it: its position, its kind, and the parameters the single path's
    rpc takes for it (built by the same functions, so that both store the same)."""
    if isinstance(event.event, WebhookPayload):
        kind, params = "message", incoming_params(context, event.event, event.event_id, event.stored)
    elif isinstance(event.event, OutgoingEvent):
        kind, params = "outgoing", outgoing_params(context, event.event, event.stored)
    else:
        stored_by = _stored_by(event)
        kind, params = stored_by.rpc, stored_by.params(context, event.event)
    return {"i": event.index, "kind": kind,
            **{name: value for name, value in params.items() if name not in BATCH_WIDE_PARAMS}}


def _stored_by(event: _Event) -> StoredByRpc:
    stored_by = EVENT_TYPES[event.kind].stored_by
    assert stored_by is not None, event.kind
    return stored_by


def _stored_result(event: _Event, stored: dict[str, Any] | None) -> dict[str, Any]:
    if stored is None:
        raise DatabaseError(f"The database answered ingest_telegram_batch without event {event.index}")
    if "error" in stored:
        # The rpc's own check of what the models here already require: permanent, like a 422.
        return _failed(event.event_id, ValidationFailedError(str(stored["error"])), retry=False)
    answer: dict[str, Any]
    if event.kind in (MESSAGE, OUTGOING):
        result = IngestResult.model_validate(stored)
        answer = (message_answer(result) if event.kind == MESSAGE
                  else outgoing_answer(result.message_id, result.client_id, duplicate=result.duplicate))
    else:
        answer = _stored_by(event).answer(stored.get("result") or {})
    return {"event_id": event.event_id, "ok": True, **{name: value for name, value in answer.items()
                                                        if name != "success"}}


def _failed(event_id: str | None, error: FunctionError, *, retry: bool) -> dict[str, Any]:
    described: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.field is not None:
        described["field"] = error.field
    return {"event_id": event_id, "ok": False, "retry": retry, "error": described}


def _raw_event_id(raw: object) -> str | None:
    if isinstance(raw, dict):
        value = raw.get("event_id")
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)[:200]
    return None

