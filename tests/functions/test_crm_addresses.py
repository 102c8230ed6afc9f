"""Which servers the functions reach for a crmApiUrl a signed-in user gives (functions/_shared/crm_addresses.py):
outside the local stack, public addresses over https only, judged after resolving the name; on the local stack,
loopback only. A listener on every address of this machine stands for the internal service an attacker wants to
reach; the functions host runs in production mode (and, at the end, as the local stack runs it)."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from functions._shared.checked_transport import resolve_with_system
from functions._shared.crm_addresses import AddressRefused, CrmAddressPolicy, parse_crm_hosts, refused_kind
from functions.host import create_standalone_app
from tests.crm_server.server_process import new_phone
from tests.functions.conftest import FunctionsHost, Organization, count, create_client
from tests.helpers.internal_service import InternalService, internal_service
from tests.helpers.net import free_port, own_addresses, wait_http

MakeOrganization = Callable[[], Awaitable[Organization]]
PRODUCTION = CrmAddressPolicy(local_mode=False)
LOCAL = CrmAddressPolicy(local_mode=True)


# --- the policy -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "0.0.0.0", "::", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "169.254.170.2", "100.64.0.1", "100.100.100.200", "192.0.0.192", "fd00:ec2::254",
    "fe80::1", "fc00::5", "224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1", "240.0.0.1", "255.255.255.255",
    "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::7f00:1",  # IPv4-mapped, IPv4-compatible
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b:1::1",  # NAT64 of 169.254.169.254 and 127.0.0.1; local NAT64
    "2002:a9fe:a9fe::1", "2002:7f00:1::1", "2001::1",  # 6to4 of 169.254.169.254 and 127.0.0.1; Teredo
])
def test_outside_the_local_stack_no_internal_address_is_reached(address: str) -> None:
    with pytest.raises(AddressRefused):
        PRODUCTION.check_address(address)
    assert refused_kind(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:1.1.1.1",
                                     "64:ff9b::101:101", "2002:101:101::1"])
def test_outside_the_local_stack_public_addresses_are_reached(address: str) -> None:
    PRODUCTION.check_address(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_the_local_stack_reaches_loopback(address: str) -> None:
    LOCAL.check_address(address)


@pytest.mark.parametrize("address", ["1.1.1.1", "10.0.0.5", "169.254.169.254", "192.0.2.2", "fd00::2", "::",
                                     "0.0.0.0", "64:ff9b::7f00:1"])
def test_the_local_stack_reaches_nothing_but_loopback(address: str) -> None:
    with pytest.raises(AddressRefused):
        LOCAL.check_address(address)


@pytest.mark.parametrize(("policy", "url"), [
    (PRODUCTION, "http://crm.example.com"),  # plain http outside the local stack
    (PRODUCTION, "ftp://crm.example.com"),
    (PRODUCTION, "https://10.0.0.5:8090"),
    (PRODUCTION, "https://[::ffff:127.0.0.1]:8090"),
    (LOCAL, "https://crm.example.com"),  # the local stack names loopback only
    (LOCAL, "http://10.0.0.5:8090"),
    (LOCAL, "http://127.1:8090"),  # a name (inet_aton would read it as 127.0.0.1): not what a local stack needs
    (LOCAL, "http://2130706433:8090"),
])
def test_urls_refused_before_anything_is_sent(policy: CrmAddressPolicy, url: str) -> None:
    parts = httpx.URL(url)
    with pytest.raises(AddressRefused):
        policy.check_url(parts.scheme, parts.raw_host.decode(), parts.port)


@pytest.mark.parametrize(("policy", "url"), [
    (PRODUCTION, "https://crm.example.com"), (PRODUCTION, "https://1.1.1.1:8443"),
    (LOCAL, "http://127.0.0.1:8090"), (LOCAL, "https://localhost:8090"), (LOCAL, "http://[::1]:8090"),
    (LOCAL, "http://LOCALHOST.:8090"),
])
def test_urls_the_policy_lets_through_to_the_address_check(policy: CrmAddressPolicy, url: str) -> None:
    parts = httpx.URL(url)
    policy.check_url(parts.scheme, parts.raw_host.decode(), parts.port)


def test_the_allow_list_names_hosts_and_ports() -> None:
    policy = CrmAddressPolicy(local_mode=False, allowed_hosts=parse_crm_hosts(
        " CRM.example.com. , crm2.example.com:8443,[2606:4700:4700::1111]:443 "))

    def allowed(url: str) -> bool:
        parts = httpx.URL(url)
        try:
            policy.check_url(parts.scheme, parts.raw_host.decode(), parts.port)
        except AddressRefused:
            return False
        return True

    assert allowed("https://crm.example.com") and allowed("https://crm.example.com:443/")
    assert not allowed("https://crm.example.com:8443")  # no port listed: the scheme's default only
    assert allowed("https://crm2.example.com:8443") and not allowed("https://crm2.example.com")
    assert allowed("https://[2606:4700:4700::1111]") and not allowed("https://1.1.1.1")
    assert not allowed("https://evil.example.com")


@pytest.mark.parametrize("value", ["http://crm.example.com", "crm:port", "a:b:c", "[::1", "crm:0", "crm:70000",
                                   "user@crm", "[::1]x"])
def test_a_malformed_allow_list_entry_is_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_crm_hosts(value)


# --- a functions host in production mode --------------------------------------------------------------------------------

class ScriptedNames:
    """The resolver seam: names a test gives answers for resolve to them; every other name goes to the system."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}

    async def __call__(self, host: str, port: int) -> list[str]:
        if host in self.names:
            return self.names[host]
        return await resolve_with_system(host, port)


@pytest.fixture(scope="module")
def internal() -> Iterator[InternalService]:
    """The internal service: listening on every address of this machine (IPv4 and IPv6)."""
    with internal_service(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", host="::") as service:
        yield service


@pytest.fixture(scope="module")
def names() -> ScriptedNames:
    return ScriptedNames()


@pytest.fixture(scope="module")
def production_host(functions_host: FunctionsHost, internal: InternalService,
                    names: ScriptedNames) -> Iterator[str]:
    """The functions as a production host runs them (no local mode), with the sandbox panel pointed at the
    internal service too; the resolver seam answers for the test's made-up names."""
    settings = functions_host.settings.model_copy(update={
        "crm_allow_http_loopback": False, "crm_sandbox_url": f"https://localhost:{internal.port}",
        "crm_sandbox_api_key": "sandbox-admin-key"})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_standalone_app(settings, crm_resolver=names), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="functions-production", daemon=True)
    thread.start()
    try:
        wait_http(f"http://127.0.0.1:{port}/health", expect_status=200)
        yield f"http://127.0.0.1:{port}/functions/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
async def production(production_host: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=production_host, timeout=60.0) as client:
        yield client


async def connect_to(http: httpx.AsyncClient, organization: Organization, url: str) -> httpx.Response:
    return await http.post("/telegram-crm-connect", headers=organization.auth, json={
        "crmApiUrl": url, "crmApiKey": "some-key", "crmPhoneNumber": new_phone()})


# This machine's own addresses besides loopback (where an internal service bound to all interfaces listens too).
OWN = [f"[{address}]" if ":" in address else address for address in own_addresses()]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "0.0.0.0", "[::1]", "[::ffff:127.0.0.1]", *OWN])
async def test_connect_never_reaches_an_internal_address_it_is_given(
        production: httpx.AsyncClient, internal: InternalService, db: asyncpg.Pool,
        make_organization: MakeOrganization, host: str) -> None:
    organization = await make_organization()
    reached_before = internal.reached
    response = await connect_to(production, organization, internal.url(host, scheme="https"))
    assert internal.reached == reached_before, "the internal service was reached"
    assert response.status_code == 422, response.text
    assert (response.json()["code"], response.json()["field"]) == ("CRM_SERVER_ADDRESS_NOT_ALLOWED", "crmApiUrl")
    assert await count(db, "messenger_integrations", organization.id) == 0


@pytest.mark.parametrize("host", ["localhost", "2130706433"])
async def test_connect_never_reaches_an_internal_address_a_name_resolves_to(
        production: httpx.AsyncClient, internal: InternalService, db: asyncpg.Pool,
        make_organization: MakeOrganization, host: str) -> None:
    # The system's own resolver: localhost is loopback; glibc reads 2130706433 as 127.0.0.1.
    organization = await make_organization()
    reached_before = internal.reached
    response = await connect_to(production, organization, internal.url(host, scheme="https"))
    assert internal.reached == reached_before, "the internal service was reached"
    assert (response.status_code, response.json()["code"]) == (502, "CRM_SERVER_UNREACHABLE"), response.text
    assert await count(db, "messenger_integrations", organization.id) == 0


@pytest.mark.parametrize("addresses", [
    ["127.0.0.1"], ["::ffff:127.0.0.1"], ["10.0.0.7"], ["169.254.169.254"], ["fd00:ec2::254"], ["100.64.1.1"],
    ["192.0.2.2"], ["1.1.1.1", "127.0.0.1"],  # one public address does not launder an internal one
])
async def test_a_name_resolving_to_an_internal_address_is_answered_like_a_name_that_does_not_resolve(
        production: httpx.AsyncClient, internal: InternalService, names: ScriptedNames,
        make_organization: MakeOrganization, addresses: list[str]) -> None:
    organization = await make_organization()
    name = f"crm-{uuid.uuid4().hex[:8]}.internal.test"
    names.names[name] = addresses
    reached_before = internal.reached
    inward = await connect_to(production, organization, internal.url(name, scheme="https"))
    nowhere = await connect_to(production, organization, internal.url(f"{name}.invalid", scheme="https"))
    assert internal.reached == reached_before, "the internal service was reached"
    assert inward.status_code == nowhere.status_code == 502
    assert inward.json() == nowhere.json()  # which internal names exist is not the caller's to learn


# Every function that calls crm_server, for an integration stored with an internal URL (saved before this check,
# or by a local stack sharing the database): none of them reaches it.
FUNCTION_CALLS: dict[str, Callable[[str, str], tuple[str, str, dict[str, Any]]]] = {
    "send": lambda integration, client: ("POST", "/telegram-crm-send",
                                         {"integrationId": integration, "clientId": client, "text": "hi"}),
    "status": lambda integration, client: ("GET", f"/telegram-crm-status?integrationId={integration}", {}),
    "auth": lambda integration, client: ("POST", "/telegram-crm-auth",
                                         {"integrationId": integration, "step": "send-code"}),
    "pause": lambda integration, client: ("POST", "/telegram-integration-save", {
        "provider": "telegram_crm", "integrationId": integration, "isEnabled": False}),
    "disconnect": lambda integration, client: ("POST", "/telegram-integration-remove", {"integrationId": integration}),
    "sandbox": lambda integration, client: ("POST", "/telegram-crm-sandbox", {
        "integrationId": integration, "fromPhone": new_phone(), "text": "hi"}),
}


@pytest.mark.parametrize("function", list(FUNCTION_CALLS))
async def test_no_function_reaches_an_internal_url_stored_in_an_integration(
        production: httpx.AsyncClient, internal: InternalService, db: asyncpg.Pool,
        make_organization: MakeOrganization, function: str) -> None:
    organization = await make_organization()
    client_id = await create_client(db, organization.id, username="someone")
    integration_id = str(await db.fetchval(
        "INSERT INTO public.messenger_integrations (organization_id, provider, name, is_primary, is_enabled, "
        "webhook_key, settings) VALUES ($1, 'telegram_crm', 'stored', true, true, $2, $3) RETURNING id",
        organization.id, uuid.uuid4().hex, {"crmApiUrl": f"https://localhost:{internal.port}", "crmApiKey": "k",
                                            "crmPhoneNumber": new_phone(), "secret": "s" * 32}))
    method, path, body = FUNCTION_CALLS[function](integration_id, client_id)
    reached_before = internal.reached
    response = await production.request(method, path, headers=organization.auth, json=body or None)
    assert internal.reached == reached_before, f"{function} reached the internal service: {response.text}"
    if function == "status":
        assert response.json()["integrations"][0]["state"] == "error", response.text
    else:
        assert response.status_code >= 400, response.text


# --- the local stack ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", [*OWN, "crm.example.com"])
async def test_a_local_stack_reaches_no_address_but_loopback(
        http: httpx.AsyncClient, internal: InternalService, make_organization: MakeOrganization, host: str) -> None:
    organization = await make_organization()
    reached_before = internal.reached
    response = await connect_to(http, organization, internal.url(host, scheme="https"))
    assert internal.reached == reached_before, "the service on a non-loopback address was reached"
    assert (response.status_code, response.json()["code"]) == (422, "CRM_SERVER_ADDRESS_NOT_ALLOWED"), response.text


def test_a_listed_host_may_be_on_a_private_network_but_never_a_metadata_endpoint() -> None:
    """A self-hosted crm_server usually sits beside the functions, in one private network: the operator listing it in
    FUNCTIONS_CRM_HOSTS lets its private address through, and nothing else."""
    policy = CrmAddressPolicy(local_mode=False, allowed_hosts=parse_crm_hosts("crm.internal:8443"))
    assert policy.listed("crm.internal", 8443) and not policy.listed("crm.internal", 443)
    for address in ("10.0.3.7", "172.20.0.5", "192.168.1.20", "fd12:3456::7", "100.64.2.3", "127.0.0.1"):
        assert str(policy.check_address(address, listed=True)) == address
    for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192", "169.254.10.1",
                    "fe80::1", "::ffff:169.254.169.254"):
        with pytest.raises(AddressRefused):
            policy.check_address(address, listed=True)
    with pytest.raises(AddressRefused):
        policy.check_address("10.0.3.7")  # a host nobody listed
