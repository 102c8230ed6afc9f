"""What an event's handler knows besides its body: the runtime, the integration the webhook key named (its
organization checked against the body's project_id), whether the delivery was signed, and the event's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from functions._shared.errors import ProjectMismatchError
from functions._shared.event_fields import EventBase
from functions._shared.incoming_media import MediaLimits, StoredFile, store_incoming_file
from functions._shared.media import IncomingMedia
from functions._shared.rows import IntegrationRow
from functions._shared.runtime import FunctionsRuntime


@dataclass(frozen=True)
class EventContext:
    runtime: FunctionsRuntime
    integration: IntegrationRow
    signed: bool
    # The webhook-id of a signed delivery: the event's id when its body names none.
    webhook_id: str | None

    @property
    def organization_id(self) -> str:
        return self.integration.organization_id

    def check_project(self, event: EventBase) -> None:
        """An event for another organization than the key's is refused, whatever its type."""
        if str(event.project_id) != self.organization_id:
            raise ProjectMismatchError(field="project_id")

    def event_id(self, event: EventBase) -> str | None:
        return event.event_id or (self.webhook_id if self.signed else None)

    def source_metadata(self, event: EventBase) -> dict[str, Any]:
        return {"event_id": self.event_id(event), "account_phone": event.account_phone}

    async def store_media(self, media: IncomingMedia, *, chat_id: str, message_id: str) -> StoredFile:
        """The event's file from crm_server into chat-media (functions._shared.incoming_media), as for `message`."""
        runtime = self.runtime
        return await store_incoming_file(
            runtime.crm_http, runtime.media, media, crm_api_url=self.integration.settings.get("crmApiUrl"),
            organization_id=self.organization_id, integration_id=self.integration.id, chat_id=chat_id,
            message_id=message_id,
            limits=MediaLimits(runtime.settings.media_max_bytes, runtime.settings.media_fetch_timeout_seconds),
            now=datetime.now(timezone.utc))


def present(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}
