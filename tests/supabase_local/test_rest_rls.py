"""Row-level security applies through the gateway: a user reaches only their organization; service_role all."""

from __future__ import annotations

import uuid

import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClient

from tests.conftest import DEMO_ORGANIZATION_ID, DEMO_USER_ID, OrganizationMember, StatusRecorder, UserClientFactory


@pytest.fixture(scope="module")
async def member_a(user_client: UserClientFactory) -> AsyncClient:
    """The seeded demo admin, a member of the demo organization (A)."""
    return await user_client(DEMO_USER_ID)


async def test_user_reads_only_their_organization(member_a: AsyncClient,
                                                  other_organization: OrganizationMember) -> None:
    clients = await member_a.table("clients").select("organization_id").execute()
    organizations = await member_a.table("organizations").select("id").execute()
    assert clients.data and {row["organization_id"] for row in clients.data} == {DEMO_ORGANIZATION_ID}
    assert organizations.data == [{"id": DEMO_ORGANIZATION_ID}]


async def test_user_cannot_read_another_organizations_row_by_id(member_a: AsyncClient,
                                                                other_organization: OrganizationMember) -> None:
    result = await member_a.table("clients").select("id").eq("id", other_organization.client_id).execute()
    assert result.data == []


async def test_user_cannot_update_or_delete_another_organizations_row(
        member_a: AsyncClient, service_client: AsyncClient, other_organization: OrganizationMember) -> None:
    updated = await member_a.table("clients").update({"name": "hijacked"}) \
        .eq("id", other_organization.client_id).execute()
    deleted = await member_a.table("clients").delete().eq("id", other_organization.client_id).execute()
    stored = await service_client.table("clients").select("name").eq("id", other_organization.client_id) \
        .single().execute()
    assert (updated.data, deleted.data) == ([], [])
    assert stored.data == {"name": "Other Organization client"}


async def test_user_cannot_insert_into_another_organization(member_a: AsyncClient,
                                                            other_organization: OrganizationMember,
                                                            record_statuses: StatusRecorder) -> None:
    async with record_statuses(member_a) as statuses:
        with pytest.raises(APIError) as raised:
            await member_a.table("clients").insert({"organization_id": other_organization.organization_id,
                                                    "name": "smuggled"}).execute()
    assert (raised.value.code, statuses) == ("42501", [403])


async def test_user_cannot_move_own_row_into_another_organization(
        member_a: AsyncClient, other_organization: OrganizationMember) -> None:
    own = await member_a.table("clients").insert({"organization_id": DEMO_ORGANIZATION_ID,
                                                  "name": f"mover-{uuid.uuid4()}"}).execute()
    with pytest.raises(APIError) as raised:
        await member_a.table("clients").update({"organization_id": other_organization.organization_id}) \
            .eq("id", own.data[0]["id"]).execute()
    assert raised.value.code == "42501"


async def test_user_writes_within_their_organization(member_a: AsyncClient) -> None:
    name = f"own-{uuid.uuid4()}"
    inserted = await member_a.table("clients").insert({"organization_id": DEMO_ORGANIZATION_ID, "name": name}) \
        .execute()
    updated = await member_a.table("clients").update({"phone": "+1"}).eq("id", inserted.data[0]["id"]).execute()
    deleted = await member_a.table("clients").delete().eq("id", inserted.data[0]["id"]).execute()
    assert updated.data[0]["phone"] == "+1"
    assert deleted.data[0]["name"] == name


async def test_other_member_sees_only_their_own_organization(user_client: UserClientFactory,
                                                             other_organization: OrganizationMember) -> None:
    member_b = await user_client(other_organization.user_id)
    clients = await member_b.table("clients").select("id").execute()
    profile = await member_b.table("profiles").select("organization_id").single().execute()
    assert clients.data == [{"id": other_organization.client_id}]
    assert profile.data == {"organization_id": other_organization.organization_id}


async def test_service_role_bypasses_rls(service_client: AsyncClient,
                                         other_organization: OrganizationMember) -> None:
    result = await service_client.table("clients").select("organization_id") \
        .in_("organization_id", [DEMO_ORGANIZATION_ID, other_organization.organization_id]).execute()
    assert {row["organization_id"] for row in result.data} == {DEMO_ORGANIZATION_ID,
                                                                other_organization.organization_id}


async def test_column_grants_hide_integration_secrets_from_users(member_a: AsyncClient,
                                                                 record_statuses: StatusRecorder) -> None:
    allowed = await member_a.table("messenger_integrations").select("id,provider").execute()
    async with record_statuses(member_a) as statuses:
        with pytest.raises(APIError) as raised:
            await member_a.table("messenger_integrations").select("settings").execute()
    assert isinstance(allowed.data, list)
    assert (raised.value.code, statuses) == ("42501", [403])


async def test_auth_helpers_see_the_request_claims(member_a: AsyncClient) -> None:
    """auth.uid() reads request.jwt.claims: the profile policy returns the caller's own profile."""
    result = await member_a.table("profiles").select("id").eq("id", DEMO_USER_ID).execute()
    assert result.data == [{"id": DEMO_USER_ID}]
