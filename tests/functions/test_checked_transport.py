"""The transport of crm_server calls (functions/_shared/checked_transport.py) over real sockets: it connects to the
address it checked, resolving the name once per connection, and still speaks to the name (Host, TLS SNI)."""

from __future__ import annotations

import httpx
import pytest

from functions._shared.checked_transport import CheckedTransport
from functions._shared.crm_addresses import AddressRefused, CrmAddressPolicy, parse_crm_hosts
from tests.helpers.internal_service import http_answer, internal_service
from tests.helpers.net import free_port

LOCAL = CrmAddressPolicy(local_mode=True)


class CountingNames:
    """The resolver seam: `host` resolves to the addresses given, one list per lookup (a rebinding DNS server
    answers differently each time); the lookups are counted."""

    def __init__(self, *answers: list[str]) -> None:
        self._answers = list(answers)
        self.lookups = 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        return self._answers[min(self.lookups, len(self._answers)) - 1]


def client(policy: CrmAddressPolicy, names: CountingNames) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=CheckedTransport(policy, resolver=names), timeout=10.0)


async def test_the_connection_goes_to_the_checked_address_and_the_request_still_names_the_host() -> None:
    # localhost resolves to 127.0.0.2 here, where the server listens; the system's lookup (127.0.0.1) would miss it.
    port = free_port("127.0.0.2")
    names = CountingNames(["127.0.0.2"], ["127.0.0.3"])
    with internal_service(http_answer(200, "{}", "application/json"), host="127.0.0.2", port=port) as service:
        async with client(LOCAL, names) as http:
            response = await http.get(f"http://localhost:{port}/telegram/status")
    assert response.status_code == 200
    assert names.lookups == 1  # checked and connected on one answer: no second lookup to rebind
    assert service.reached == 1 and f"host: localhost:{port}".encode() in service.heads()[0].lower()


async def test_a_rebinding_name_is_looked_up_once_per_connection_and_each_answer_is_checked() -> None:
    port = free_port("127.0.0.2")
    # The first answer is allowed; the second (a later connection) points away from loopback and is refused.
    names = CountingNames(["127.0.0.2"], ["10.0.0.9"])
    with internal_service(http_answer(200, "{}", "application/json"), host="127.0.0.2", port=port) as service:
        async with client(LOCAL, names) as http:
            assert (await http.get(f"http://localhost:{port}/")).status_code == 200
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://localhost:{port}/")  # the first connection was closed by the server
    assert names.lookups == 2 and service.reached == 1


async def test_tls_is_spoken_to_the_name_not_to_the_address() -> None:
    port = free_port("127.0.0.2")
    names = CountingNames(["127.0.0.2"])
    with internal_service(http_answer(200, "{}"), host="127.0.0.2", port=port, tls=True) as service:
        async with client(LOCAL, names) as http:
            # Our certificate is self-signed: the client refuses it, after asking for the right name.
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(f"https://localhost:{port}/")
    assert [connection.server_name for connection in service.connections] == ["localhost"]


async def test_every_address_of_a_name_is_checked_before_connecting() -> None:
    port = free_port("127.0.0.2")
    names = CountingNames(["127.0.0.2", "192.0.2.2"])
    with internal_service(b"", host="127.0.0.2", port=port) as service:
        async with client(LOCAL, names) as http:
            with pytest.raises(httpx.ConnectError, match="not allowed"):
                await http.get(f"http://localhost:{port}/")
    assert service.reached == 0


async def test_only_the_listed_hosts_are_reached() -> None:
    with internal_service(http_answer(200, "{}", "application/json")) as service:
        policy = CrmAddressPolicy(local_mode=True, allowed_hosts=parse_crm_hosts(f"localhost:{service.port}"))
        async with client(policy, CountingNames(["127.0.0.1"])) as http:
            assert (await http.get(f"http://localhost:{service.port}/")).status_code == 200
            with pytest.raises(AddressRefused, match="FUNCTIONS_CRM_HOSTS"):
                await http.get(f"http://127.0.0.1:{service.port}/")
            with pytest.raises(AddressRefused, match="FUNCTIONS_CRM_HOSTS"):
                await http.get(f"http://localhost:{free_port()}/")
    assert service.reached == 1


async def test_a_url_refused_outright_is_not_even_looked_up() -> None:
    names = CountingNames(["1.1.1.1"])
    async with client(CrmAddressPolicy(local_mode=False), names) as http:
        with pytest.raises(AddressRefused, match="https"):
            await http.get("http://crm.example.com/")
    assert names.lookups == 0
