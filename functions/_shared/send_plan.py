"""`SendPlan`: everything a send reads before it goes out, in one round trip (`prepare_telegram_send`): the caller's
organization, the client, an earlier send under the Idempotency-Key, the chosen integration and the failover ones.

The database answers problems as data; `SendPlan`'s steps raise them in the order the send always reported them
(the caller's organization first, then — between those steps — the handler's own file check, then the client, the
key, the integration). How the route is chosen is said in the migration (20261213090000_telegram_send_rpcs.sql).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from supabase import AsyncClient

from functions._shared.database import rpc_value
from functions._shared.errors import (
    ClientNotFoundError,
    DatabaseError,
    IdempotencyKeyReusedError,
    IntegrationDisabledError,
    IntegrationNotFoundError,
    OrganizationNotFoundError,
)
from functions._shared.integrations import IntegrationStore
from functions._shared.rows import ChatMessageRow, ClientRow, IntegrationRow, Provider


@dataclass(frozen=True)
class SendPlan:
    """What `prepare_telegram_send` answered, opened: read it through the properties, in the order they are listed."""

    answer: Mapping[str, Any]
    client_id: str
    explicit_id: str | None
    providers: tuple[Provider, ...]
    integrations: IntegrationStore = field(repr=False)

    @property
    def organization_id(self) -> str:
        """404 when the caller belongs to no organization."""
        organization_id = self.answer.get("organization_id")
        if not organization_id:
            raise OrganizationNotFoundError()
        return str(organization_id)

    @property
    def client(self) -> ClientRow:
        """The organization's client; another organization's is 404, exactly like a missing one."""
        row = self.answer.get("client")
        if row is None:
            raise ClientNotFoundError(field="clientId")
        return ClientRow.model_validate(row)

    @property
    def earlier(self) -> ChatMessageRow | None:
        """A replayed request: the row of the first send, or 422 when the key was used for another client."""
        row = self.answer.get("earlier")
        if row is None:
            return None
        if str(row["client_id"]) != self.client_id:
            raise IdempotencyKeyReusedError(field="Idempotency-Key")
        return ChatMessageRow.model_validate(row)

    @property
    def chosen(self) -> IntegrationRow:
        """The integration that sends; 404/409 when the explicit one cannot, or the organization has none."""
        problem = self.answer.get("problem")
        if problem == "integration_not_found":
            raise IntegrationNotFoundError(field="integrationId")
        if problem == "provider_not_allowed":
            raise IntegrationNotFoundError(f"Integration {self.explicit_id} is not a {' or '.join(self.providers)} "
                                           f"integration", field="integrationId")
        if problem == "integration_disabled":
            raise IntegrationDisabledError(field="integrationId")
        if problem == "none_enabled":
            raise IntegrationNotFoundError("The organization has no enabled Telegram integration; connect one first")
        row = self.answer.get("chosen")
        if not isinstance(row, Mapping):
            raise DatabaseError("The database answered prepare_telegram_send unexpectedly")
        return self.integrations.opened(row)

    def failover_candidate(self) -> IntegrationRow | None:
        """The integration to try once after the chosen one: the first other enabled one, primary first (None
        without failover). Opened only when asked: each opening decrypts its settings."""
        candidates = self.answer.get("failover") or []
        return self.integrations.opened(candidates[0]) if candidates else None


async def prepare_send(db: AsyncClient, integrations: IntegrationStore, *, user_id: str, client_id: str,
                       idempotency_key: str, explicit_id: str | None, providers: Collection[Provider],
                       fail_over: bool) -> SendPlan:
    """One round trip for every read of a send (see the module docstring)."""
    params: dict[str, Any] = {"p_user_id": user_id, "p_client_id": client_id, "p_idempotency_key": idempotency_key,
                              "p_integration_id": explicit_id, "p_providers": list(providers),
                              "p_fail_over": fail_over}
    answer = await rpc_value(db.rpc("prepare_telegram_send", params), "preparing the send")
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    if not isinstance(answer, Mapping):
        raise DatabaseError("The database answered prepare_telegram_send unexpectedly")
    return SendPlan(answer, client_id, explicit_id, tuple(providers), integrations)
