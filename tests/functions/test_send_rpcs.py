"""The send's two database calls, through supabase-py over the REST gateway as the functions make them:
prepare_telegram_send (organization, client, replay, route, failover candidates) and store_telegram_send."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient

from tests.conftest import UserClientFactory
from tests.functions.conftest import Organization, create_client

MakeOrganization = Callable[[], Awaitable[Organization]]


async def integration(db: asyncpg.Pool, organization_id: str, provider: str = "telegram_crm", *,
                      primary: bool = False, enabled: bool = True, created_at: str = "now()") -> str:
    return str(await db.fetchval(
        "INSERT INTO public.messenger_integrations (organization_id, provider, name, is_primary, is_enabled, settings,"
        f" created_at) VALUES ($1, $2, 'Account', $3, $4, $5, {created_at}) RETURNING id",
        organization_id, provider, primary, enabled, {"crmApiUrl": "http://crm.test", "crmApiKey": "k",
                                                      "crmPhoneNumber": "+1", "secret": "s"}))


async def incoming(db: asyncpg.Pool, organization_id: str, client_id: str, integration_id: str | None) -> None:
    await db.execute(
        "INSERT INTO public.chat_messages (organization_id, client_id, integration_id, message_text, message_type,"
        " is_outgoing) VALUES ($1, $2, $3, 'hi', 'client', false)", organization_id, client_id, integration_id)


async def prepare(service: AsyncClient, organization: Organization, client_id: str, key: str | None = None,
                  **extra: Any) -> dict[str, Any]:
    params = {"p_user_id": organization.user_id, "p_client_id": client_id,
              "p_idempotency_key": key or uuid.uuid4().hex, **extra}
    return (await service.rpc("prepare_telegram_send", params).execute()).data


async def store(service: AsyncClient, organization_id: str, client_id: str, integration_id: str, key: str,
                **extra: Any) -> dict[str, Any]:
    params = {"p_organization_id": organization_id, "p_client_id": client_id, "p_integration_id": integration_id,
              "p_idempotency_key": key, "p_message_text": "hello", "p_external_message_id": "77",
              "p_metadata": {"provider": "telegram_crm"}, **extra}
    return (await service.rpc("store_telegram_send", params).execute()).data


# --- prepare_telegram_send: the route --------------------------------------------------------------------------------

async def test_the_integration_of_the_last_incoming_message_is_chosen_else_the_primary_else_the_oldest(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    client_id = await create_client(db, organization.id, username="routed")
    oldest = await integration(db, organization.id, created_at="now() - interval '2 days'")
    newer = await integration(db, organization.id, "wappi", created_at="now() - interval '1 day'")
    assert (await prepare(service_client, organization, client_id))["chosen"]["id"] == oldest

    primary = await integration(db, organization.id, primary=True)
    answer = await prepare(service_client, organization, client_id)
    assert answer["chosen"]["id"] == primary
    assert answer["client"]["id"] == client_id and answer["organization_id"] == organization.id
    assert answer["earlier"] is None and answer["failover"] == []  # no failover asked

    await incoming(db, organization.id, client_id, newer)
    assert (await prepare(service_client, organization, client_id))["chosen"]["id"] == newer
    # Not an allowed provider (telegram-crm-send): the primary instead.
    assert (await prepare(service_client, organization, client_id,
                          p_providers=["telegram_crm"]))["chosen"]["id"] == primary
    # Its integration disabled since: the primary again.
    await db.execute("UPDATE public.messenger_integrations SET is_enabled = false WHERE id = $1", newer)
    assert (await prepare(service_client, organization, client_id))["chosen"]["id"] == primary


async def test_failover_candidates_are_the_other_enabled_integrations_primary_first(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    client_id = await create_client(db, organization.id, username="failing")
    older = await integration(db, organization.id, "wappi", created_at="now() - interval '2 days'")
    primary = await integration(db, organization.id, primary=True, created_at="now() - interval '1 day'")
    await integration(db, organization.id, enabled=False)
    chosen = await integration(db, organization.id)
    await incoming(db, organization.id, client_id, chosen)

    answer = await prepare(service_client, organization, client_id, p_fail_over=True)
    assert answer["chosen"]["id"] == chosen
    assert [row["id"] for row in answer["failover"]] == [primary, older]
    # Any provider may take a failover, whatever the providers allowed to be chosen (as the function always did).
    narrowed = await prepare(service_client, organization, client_id, p_fail_over=True, p_providers=["telegram_crm"])
    assert [row["id"] for row in narrowed["failover"]] == [primary, older]
    assert answer["chosen"]["settings"]["crmApiKey"] == "k"  # the functions open it; it never leaves them


async def test_an_explicit_integration_is_chosen_or_its_problem_named(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization, other = await make_organization(), await make_organization()
    client_id = await create_client(db, organization.id, username="explicit")
    await integration(db, organization.id, primary=True)
    wappi = await integration(db, organization.id, "wappi")
    disabled = await integration(db, organization.id, enabled=False)
    foreign = await integration(db, other.id, primary=True)

    assert (await prepare(service_client, organization, client_id, p_integration_id=wappi))["chosen"]["id"] == wappi
    for explicit, providers, problem in ((foreign, None, "integration_not_found"),
                                         (str(uuid.uuid4()), None, "integration_not_found"),
                                         (wappi, ["telegram_crm"], "provider_not_allowed"),
                                         (disabled, None, "integration_disabled")):
        extra: dict[str, Any] = {"p_integration_id": explicit}
        if providers:
            extra["p_providers"] = providers
        answer = await prepare(service_client, organization, client_id, **extra)
        assert (answer["problem"], "chosen" in answer) == (problem, False), explicit


async def test_an_organization_without_an_enabled_integration_has_no_route(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization, other = await make_organization(), await make_organization()
    client_id = await create_client(db, organization.id, username="nobody")
    await integration(db, organization.id, enabled=False)
    await integration(db, other.id, primary=True)
    assert (await prepare(service_client, organization, client_id))["problem"] == "none_enabled"


# --- prepare_telegram_send: organization, client, replay -------------------------------------------------------------

async def test_another_organizations_client_is_not_found_and_a_user_without_organization_has_none(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization, other = await make_organization(), await make_organization()
    await integration(db, organization.id, primary=True)
    foreign_client = await create_client(db, other.id, username="theirs")
    answer = await prepare(service_client, organization, foreign_client)
    assert answer == {"organization_id": organization.id, "client": None}

    await db.execute("UPDATE public.profiles SET organization_id = NULL WHERE id = $1", organization.user_id)
    assert await prepare(service_client, organization, foreign_client) == {"organization_id": None}


async def test_an_earlier_send_under_the_key_is_found_instead_of_a_route(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization, other = await make_organization(), await make_organization()
    client_id = await create_client(db, organization.id, username="replayed")
    integration_id = await integration(db, organization.id, primary=True)
    key = uuid.uuid4().hex
    stored = await store(service_client, organization.id, client_id, integration_id, key)

    answer = await prepare(service_client, organization, client_id, key)
    assert answer["earlier"]["id"] == stored["message_id"] and "chosen" not in answer
    assert (answer["earlier"]["client_id"], answer["earlier"]["external_message_id"],
            answer["earlier"]["message_status"]) == (client_id, "77", "sent")
    # The same key in another organization is another key.
    other_client = await create_client(db, other.id, username="replayed")
    await integration(db, other.id, primary=True)
    assert (await prepare(service_client, other, other_client, key))["earlier"] is None


# --- store_telegram_send -------------------------------------------------------------------------------------------

async def test_storing_is_idempotent_by_the_key_and_touches_the_client(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    client_id = await create_client(db, organization.id, username="stored", telegram_user_id="555")
    integration_id = await integration(db, organization.id, primary=True)
    key = uuid.uuid4().hex
    first = await store(service_client, organization.id, client_id, integration_id, key,
                        p_telegram_user_id="999", p_telegram_chat_id="4242", p_sent_at="2026-12-01T10:00:00+00:00")
    again = await store(service_client, organization.id, client_id, integration_id, key)
    assert (first["duplicate"], again) == (False, {"message_id": first["message_id"], "duplicate": True})

    row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", first["message_id"])
    assert (row["message_text"], row["message_status"], row["is_outgoing"], row["message_type"],
            row["idempotency_key"], row["metadata"]) == ("hello", "sent", True, "manager", key,
                                                         {"provider": "telegram_crm"})
    assert await db.fetchval("SELECT count(*) FROM public.chat_messages WHERE idempotency_key = $1", key) == 1
    client = await db.fetchrow("SELECT * FROM public.clients WHERE id = $1", client_id)
    # Ids the client had are kept; those it lacked are learnt.
    assert (client["telegram_user_id"], client["telegram_chat_id"]) == ("555", "4242")
    assert client["last_message_at"] is not None


async def test_a_telegram_id_another_client_holds_only_touches_and_the_message_is_stored(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    await create_client(db, organization.id, username="holder", telegram_user_id="31337")
    client_id = await create_client(db, organization.id, username="learner")
    integration_id = await integration(db, organization.id, primary=True)
    stored = await store(service_client, organization.id, client_id, integration_id, uuid.uuid4().hex,
                         p_telegram_user_id="31337")
    assert stored["duplicate"] is False
    client = await db.fetchrow("SELECT * FROM public.clients WHERE id = $1", client_id)
    assert client["telegram_user_id"] is None and client["last_message_at"] is not None


async def test_a_claimed_row_becomes_the_sent_message(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    client_id = await create_client(db, organization.id, username="claimed")
    first, second = await integration(db, organization.id, primary=True), await integration(db, organization.id)
    key = uuid.uuid4().hex
    claimed = str(await db.fetchval(
        "INSERT INTO public.chat_messages (organization_id, client_id, integration_id, message_type, is_outgoing,"
        " message_status, idempotency_key) VALUES ($1, $2, $3, 'manager', true, 'sending', $4) RETURNING id",
        organization.id, client_id, first, key))
    stored = await store(service_client, organization.id, client_id, second, key, p_claimed_row_id=claimed)
    assert stored == {"message_id": claimed, "duplicate": False}
    row = await db.fetchrow("SELECT * FROM public.chat_messages WHERE id = $1", claimed)
    assert (row["message_status"], row["integration_id"], row["external_message_id"]) == ("sent", second, "77")


async def test_storing_for_another_organizations_client_integration_or_claim_is_refused(
        service_client: AsyncClient, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization, other = await make_organization(), await make_organization()
    client_id = await create_client(db, organization.id, username="mine")
    integration_id = await integration(db, organization.id, primary=True)
    foreign_client = await create_client(db, other.id, username="theirs")
    foreign_integration = await integration(db, other.id, primary=True)
    foreign_claim = str(await db.fetchval(
        "INSERT INTO public.chat_messages (organization_id, client_id, message_type, is_outgoing, message_status,"
        " idempotency_key) VALUES ($1, $2, 'manager', true, 'sending', 'k') RETURNING id", other.id, foreign_client))

    with pytest.raises(APIError) as refused:
        await store(service_client, organization.id, foreign_client, integration_id, uuid.uuid4().hex)
    assert refused.value.code == "PT404"
    with pytest.raises(APIError) as refused:
        await store(service_client, organization.id, client_id, foreign_integration, uuid.uuid4().hex)
    assert refused.value.code == "23503"  # the composite key: the integration is not this organization's
    with pytest.raises(APIError) as refused:
        await store(service_client, organization.id, client_id, integration_id, "k", p_claimed_row_id=foreign_claim)
    assert refused.value.code == "PT404"
    assert await db.fetchval("SELECT message_status FROM public.chat_messages WHERE id = $1", foreign_claim) == \
        "sending"
    assert await db.fetchval("SELECT count(*) FROM public.chat_messages WHERE organization_id = $1",
                             organization.id) == 0


async def test_only_the_service_role_may_call_them(
        user_client: UserClientFactory, db: asyncpg.Pool, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    client_id = await create_client(db, organization.id, username="direct")
    integration_id = await integration(db, organization.id, primary=True)
    as_user = await user_client(organization.user_id)
    with pytest.raises(APIError):
        await prepare(as_user, organization, client_id)
    with pytest.raises(APIError):
        await store(as_user, organization.id, client_id, integration_id, uuid.uuid4().hex)
    assert await db.fetchval("SELECT count(*) FROM public.chat_messages WHERE organization_id = $1",
                             organization.id) == 0
