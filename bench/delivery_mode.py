"""How crm_server delivers an account's events to telegram-crm-webhook in a bench: batched (`{batch_id, events}`
posts, contract section "Batched delivery") or one event per POST, switched on the same account in one run by
re-registering its webhook directly at crm_server, with the integration's own URL, secret and event types.

telegram-crm-connect registers with batching once it does (branch `batch-ingest`); the benches set the mode
themselves either way, so both paths are measured on the same stack, account and chats.
"""

from __future__ import annotations

import asyncio
from typing import Any

# The bench's batch: at most 100 events per POST, waiting at most 20 ms for more.
BENCH_BATCH: dict[str, int] = {"max_events": 100, "max_wait_ms": 20}
# A bench's note when `register_delivery` found batching ignored.
IGNORED_NOTE = ("crm_server's connect answer showed no `batch`: this server has no batched delivery, so the "
                "'batched' figures are one event per POST too")


async def register_delivery(stack: Any, account: Any, batch: dict[str, int] | None) -> bool:
    """Re-connect `account` (tests.reliability.stack.Account) at crm_server with `batch` (None: one per POST).
    False when batching was asked for and the answer does not show it: a crm_server without batched delivery
    ignores the field and posts one event per POST on both paths."""
    from functions._shared.event_types import SUBSCRIBED_TYPES

    _, secret = await stack.integration_secret(account.integration_id)
    from crm_server.webhooks.worker import DeliverySettings

    answer = await stack.crm_ok("POST", "/integration/lovable/connect", json={
        "project_id": account.tenant.organization_id, "phone": account.phone, "webhook_url": account.webhook_url,
        "secret": secret, "secret_header": False, "events": list(SUBSCRIBED_TYPES), "batch": batch})
    # A chat's lane reads the registration when it starts and lingers `linger_seconds` for the chat's next message:
    # a burst right after the re-registration would still go out the old way. Every lane has closed after this.
    await asyncio.sleep(DeliverySettings().linger_seconds + 1.0)
    return batch is None or bool(answer.get("batch"))
