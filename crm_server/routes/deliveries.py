"""The operator's view of webhook deliveries: list them by state, and put a dead letter back in its queue.

Every query is scoped to the caller's project; an admin key may look at any project.
"""

from __future__ import annotations

import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from crm_server import errors
from crm_server.app_state import AppState
from crm_server.routes.auth import authenticate, require_project
from crm_server.routes.models import DeliveriesQuery, DeliveriesResponse, DeliveryEntry, DeliveryPath, RetryResponse
from crm_server.routes.parsing import parse_path, parse_query
from crm_server.webhooks.delivery_log import DeliveryRecord, OutboxState

# The contract's words for the store's states: a dead letter is listed as "failed" ("dead" is accepted as a filter).
STATES = {"failed": OutboxState.DEAD, "dead": OutboxState.DEAD, "pending": OutboxState.PENDING,
          "delivered": OutboxState.DELIVERED}
WIRE_STATES = {OutboxState.DEAD: "failed", OutboxState.PENDING: "pending", OutboxState.DELIVERED: "delivered"}


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _entry(record: DeliveryRecord) -> DeliveryEntry:
    return DeliveryEntry(
        id=record.id, event_id=record.event_id, project_id=record.project_id, phone=record.phone,
        chat_id=record.chat_id, message_id=record.message_id, state=WIRE_STATES[record.state],
        attempts=record.attempts, last_status=record.last_status, last_error=record.last_error,
        next_attempt_at=iso(record.next_attempt_at) if record.state is OutboxState.PENDING else None,
        created_at=iso(record.created_at), delivered_at=iso(record.delivered_at),
    )


async def list_deliveries(request: Request) -> Response:
    state: AppState = request.app.state.crm
    principal = await authenticate(request)
    query = parse_query(request, DeliveriesQuery)
    require_project(principal, query.project_id)
    records = await state.deliveries.list(query.project_id, STATES[query.state], limit=query.limit)
    entries = [_entry(record) for record in records]
    return JSONResponse(DeliveriesResponse(deliveries=entries).model_dump(mode="json"))


async def retry_delivery(request: Request) -> Response:
    state: AppState = request.app.state.crm
    principal = await authenticate(request)
    path = parse_path(request, DeliveryPath)
    # A project key may retry only its own project's dead letters; the store checks the row's project.
    project_id = None if principal.is_admin else principal.project_id
    if not await state.deliveries.retry(path.id, project_id):
        raise errors.DeliveryNotFoundError()
    return JSONResponse(RetryResponse(status="queued", id=path.id).model_dump(mode="json"), status_code=202)
