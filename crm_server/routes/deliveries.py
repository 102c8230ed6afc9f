"""The operator's view of webhook deliveries: list them by state, and put a dead letter back in its queue.

Every query is scoped to the caller's project; an admin key may look at any project.
"""

from __future__ import annotations

import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from crm_server import errors
from crm_server.app_state import AppState
from crm_server.routes.auth import require_project
from crm_server.routes.models import DeliveriesQuery, DeliveriesResponse, DeliveryEntry, DeliveryPath, RetryResponse
from crm_server.routes.parsing import parse_path, parse_query
from crm_server.store.schema import DEAD, DELIVERED, PENDING

STATES = {"failed": DEAD, "dead": DEAD, "pending": PENDING, "delivered": DELIVERED}


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


async def list_deliveries(request: Request) -> Response:
    state: AppState = request.app.state.crm
    principal = await state.authenticator.authenticate(request)
    query = parse_query(request, DeliveriesQuery)
    require_project(principal, query.project_id)
    rows = await state.store.outbox.list(query.project_id, STATES[query.state], limit=query.limit)
    entries = [
        DeliveryEntry(
            **{**row, "next_attempt_at": iso(row["next_attempt_at"]) if row["state"] == "pending" else None,
               "created_at": iso(row["created_at"]), "delivered_at": iso(row["delivered_at"])}
        )
        for row in rows
    ]
    return JSONResponse(DeliveriesResponse(deliveries=entries).model_dump(mode="json"))


async def retry_delivery(request: Request) -> Response:
    state: AppState = request.app.state.crm
    principal = await state.authenticator.authenticate(request)
    path = parse_path(request, DeliveryPath)
    # A project key may retry only its own project's dead letters; the store checks the row's project.
    project_id = None if principal.is_admin else principal.project_id
    if not await state.store.outbox.retry(path.id, project_id):
        raise errors.DeliveryNotFoundError()
    state.delivery.wake()
    return JSONResponse(RetryResponse(status="queued", id=path.id).model_dump(mode="json"), status_code=202)
