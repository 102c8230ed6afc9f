"""Tenant integrity in the schema: a row references only rows of its own organization, whoever writes it.

A user of organization A names organization B's client, integration or user through the REST gateway (supabase-py
with A's JWT): refused with the very error a non-existent id gets, so the answer never tells that B's id exists.
The service role (the functions) is held to the same rule by the foreign keys themselves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg
import pytest
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod
from supabase import AsyncClient

from supabase_local.database import DatabaseUrls
from tests.conftest import OrganizationMember, StatusRecorder, UserClientFactory, create_organization_member


@dataclass(frozen=True)
class Tenant:
    member: OrganizationMember
    integration_id: str
    client: AsyncClient  # supabase-py signed in as the member

    @property
    def organization_id(self) -> str:
        return self.member.organization_id


async def make_tenant(database_urls: DatabaseUrls, user_client: UserClientFactory, name: str) -> Tenant:
    member = await create_organization_member(database_urls.admin, f"{name} {uuid.uuid4().hex[:6]}")
    conn = await asyncpg.connect(database_urls.admin)
    try:
        integration_id = await conn.fetchval(
            "INSERT INTO messenger_integrations (organization_id, provider) VALUES ($1, 'telegram_crm') RETURNING id",
            member.organization_id)
    finally:
        await conn.close()
    return Tenant(member, str(integration_id), await user_client(member.user_id))


@pytest.fixture(scope="module")
async def tenant_a(database_urls: DatabaseUrls, user_client: UserClientFactory) -> Tenant:
    return await make_tenant(database_urls, user_client, "Tenant A")


@pytest.fixture(scope="module")
async def tenant_b(database_urls: DatabaseUrls, user_client: UserClientFactory) -> Tenant:
    return await make_tenant(database_urls, user_client, "Tenant B")


def message(tenant: Tenant, **fields: object) -> dict[str, object]:
    return {"organization_id": tenant.organization_id, "client_id": tenant.member.client_id,
            "integration_id": tenant.integration_id, "message_type": "manager", "message_text": "hello", **fields}


async def refusal(client: AsyncClient, record_statuses: StatusRecorder, request, named_id: str) -> tuple:
    """(status, code, message, details, hint) of a refused write, with the id it named blanked out."""
    async with record_statuses(client) as statuses:
        with pytest.raises(APIError) as raised:
            await request.execute()
    error = raised.value
    return (statuses, error.code, *(str(part).replace(named_id, "<id>")
                                    for part in (error.message, error.details, error.hint)))


async def assert_refused_like_an_unknown_id(client: AsyncClient, record_statuses: StatusRecorder,
                                            build, foreign_id: str) -> None:
    unknown_id = str(uuid.uuid4())
    foreign = await refusal(client, record_statuses, build(foreign_id), foreign_id)
    unknown = await refusal(client, record_statuses, build(unknown_id), unknown_id)
    assert foreign == unknown
    assert foreign[:2] == ([409], "23503")


async def test_a_message_naming_another_organizations_client_is_refused_like_an_unknown_id(
        tenant_a: Tenant, tenant_b: Tenant, record_statuses: StatusRecorder) -> None:
    messages = tenant_a.client.table("chat_messages")
    await assert_refused_like_an_unknown_id(
        tenant_a.client, record_statuses, lambda client_id: messages.insert(message(tenant_a, client_id=client_id)),
        tenant_b.member.client_id)


async def test_a_message_naming_another_organizations_integration_is_refused_like_an_unknown_id(
        tenant_a: Tenant, tenant_b: Tenant, record_statuses: StatusRecorder) -> None:
    messages = tenant_a.client.table("chat_messages")
    await assert_refused_like_an_unknown_id(
        tenant_a.client, record_statuses,
        lambda integration_id: messages.insert(message(tenant_a, integration_id=integration_id, is_outgoing=False,
                                                       message_type="client", external_message_id="5")),
        tenant_b.integration_id)


async def test_an_own_message_cannot_be_repointed_at_another_organizations_rows(
        tenant_a: Tenant, tenant_b: Tenant, record_statuses: StatusRecorder) -> None:
    messages = tenant_a.client.table("chat_messages")
    own = await messages.insert(message(tenant_a)).execute()
    row_id = own.data[0]["id"]
    await assert_refused_like_an_unknown_id(
        tenant_a.client, record_statuses,
        lambda client_id: messages.update({"client_id": client_id}).eq("id", row_id), tenant_b.member.client_id)
    await assert_refused_like_an_unknown_id(
        tenant_a.client, record_statuses,
        lambda integration_id: messages.update({"integration_id": integration_id}).eq("id", row_id),
        tenant_b.integration_id)


async def test_a_notification_for_another_organizations_user_is_refused_like_an_unknown_id(
        tenant_a: Tenant, tenant_b: Tenant, record_statuses: StatusRecorder) -> None:
    notifications = tenant_a.client.table("notifications")
    await assert_refused_like_an_unknown_id(
        tenant_a.client, record_statuses,
        lambda user_id: notifications.insert({"organization_id": tenant_a.organization_id, "user_id": user_id,
                                              "type": "note", "title": "for you"}),
        tenant_b.member.user_id)


async def test_the_service_role_cannot_cross_organizations_either(
        service_client: AsyncClient, tenant_a: Tenant, tenant_b: Tenant, record_statuses: StatusRecorder) -> None:
    messages = service_client.table("chat_messages")
    for fields in ({"client_id": tenant_b.member.client_id}, {"integration_id": tenant_b.integration_id}):
        async with record_statuses(service_client) as statuses:
            with pytest.raises(APIError) as raised:
                await messages.insert(message(tenant_a, **fields)).execute()
        assert (raised.value.code, statuses) == ("23503", [409])


async def test_own_rows_are_written_as_before(tenant_a: Tenant) -> None:
    stored = await tenant_a.client.table("chat_messages").insert(message(tenant_a)).execute()
    notified = await tenant_a.client.table("notifications").insert({
        "organization_id": tenant_a.organization_id, "user_id": tenant_a.member.user_id, "type": "note",
        "title": "for me"}).execute()
    assert stored.data[0]["integration_id"] == tenant_a.integration_id
    assert notified.data[0]["user_id"] == tenant_a.member.user_id


async def test_a_removed_integration_leaves_its_messages_in_their_organization(
        database_urls: DatabaseUrls, user_client: UserClientFactory) -> None:
    tenant = await make_tenant(database_urls, user_client, "Removal")
    stored = await tenant.client.table("chat_messages").insert(message(tenant)).execute()
    await tenant.client.table("messenger_integrations").delete(returning=ReturnMethod.minimal).eq("id", tenant.integration_id).execute()
    kept = await tenant.client.table("chat_messages").select("organization_id, client_id, integration_id") \
        .eq("id", stored.data[0]["id"]).single().execute()
    assert kept.data == {"organization_id": tenant.organization_id, "client_id": tenant.member.client_id,
                         "integration_id": None}


async def test_a_client_with_history_cannot_move_to_another_organization(
        database_urls: DatabaseUrls, tenant_a: Tenant, tenant_b: Tenant) -> None:
    await tenant_a.client.table("chat_messages").insert(message(tenant_a)).execute()
    conn = await asyncpg.connect(database_urls.admin)
    try:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute("UPDATE clients SET organization_id = $1 WHERE id = $2", tenant_b.organization_id,
                               tenant_a.member.client_id)
    finally:
        await conn.close()


async def test_a_user_who_moves_to_another_organization_leaves_their_notifications_behind(
        database_urls: DatabaseUrls, user_client: UserClientFactory, tenant_b: Tenant) -> None:
    """The old organization keeps its notifications, addressed to no one: they never follow the user out."""
    leaver = await make_tenant(database_urls, user_client, "Leaver")
    created = await leaver.client.table("notifications").insert({
        "organization_id": leaver.organization_id, "user_id": leaver.member.user_id, "type": "note",
        "title": "yours"}).execute()
    conn = await asyncpg.connect(database_urls.admin)
    try:
        await conn.execute("UPDATE profiles SET organization_id = $1 WHERE id = $2", tenant_b.organization_id,
                           leaver.member.user_id)
        kept = await conn.fetchrow("SELECT organization_id, user_id FROM notifications WHERE id = $1",
                                   uuid.UUID(created.data[0]["id"]))
    finally:
        await conn.close()
    assert (str(kept["organization_id"]), kept["user_id"]) == (leaver.organization_id, None)


async def test_an_organization_is_still_deleted_with_everything_it_owns(
        database_urls: DatabaseUrls, user_client: UserClientFactory) -> None:
    tenant = await make_tenant(database_urls, user_client, "Deleted")
    await tenant.client.table("chat_messages").insert(message(tenant)).execute()
    await tenant.client.table("notifications").insert({
        "organization_id": tenant.organization_id, "user_id": tenant.member.user_id, "type": "note",
        "title": "bye"}).execute()
    conn = await asyncpg.connect(database_urls.admin)
    try:
        await conn.execute("DELETE FROM organizations WHERE id = $1", tenant.organization_id)
        left = [await conn.fetchval(f"SELECT count(*) FROM {table} WHERE organization_id = $1",
                                    tenant.organization_id)
                for table in ("clients", "messenger_integrations", "chat_messages", "notifications")]
        profile = await conn.fetchval("SELECT organization_id FROM profiles WHERE id = $1", tenant.member.user_id)
    finally:
        await conn.close()
    assert (left, profile) == ([0, 0, 0, 0], None)
