"""`tgcrm up`'s demo clients on the sandbox, without a stack: what it posts to `/sandbox/users` and how it takes a
refusal (a warning per client, never an exception that would stop the stack)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from tgcrm.demo_clients import DemoClient, create_sandbox_users

IVAN = DemoClient(name="Ivan Petrov", phone="+79990000001", username="ivan_petrov")
MARIA = DemoClient(name="Maria Smirnova", phone="+79990000002", username=None)


def recording_transport(answer: Callable[[httpx.Request], httpx.Response]
                        ) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return httpx.MockTransport(handle), seen


async def test_each_client_is_posted_with_its_phone_username_and_name_under_the_admin_key() -> None:
    transport, seen = recording_transport(lambda request: httpx.Response(200, json={"user_id": 100_000_001}))
    assert await create_sandbox_users("http://crm.test", "tgcrm_admin", [IVAN, MARIA], transport) == []
    assert [request.url.path for request in seen] == ["/sandbox/users", "/sandbox/users"]
    assert {request.headers["X-API-Key"] for request in seen} == {"tgcrm_admin"}
    assert [json.loads(request.content) for request in seen] == [
        {"phone": "+79990000001", "first_name": "Ivan", "last_name": "Petrov", "username": "ivan_petrov"},
        {"phone": "+79990000002", "first_name": "Maria", "last_name": "Smirnova"},
    ]


async def test_a_username_another_simulated_user_holds_leaves_the_client_reachable_by_phone() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "username" in json.loads(request.content):
            return httpx.Response(422, json={"success": False, "error": "Another simulated user has this username",
                                             "code": "VALIDATION_ERROR", "field": "username"})
        return httpx.Response(200, json={"user_id": 100_000_002})

    transport, seen = recording_transport(answer)
    problems = await create_sandbox_users("http://crm.test", "key", [IVAN], transport)
    assert [json.loads(request.content).get("username") for request in seen] == ["ivan_petrov", None]
    assert len(problems) == 1 and "@ivan_petrov" in problems[0] and "by phone only" in problems[0]


async def test_an_unreachable_sandbox_is_a_warning_per_client() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport, _ = recording_transport(refuse)
    problems = await create_sandbox_users("http://crm.test", "key", [IVAN, MARIA], transport)
    assert len(problems) == 2 and all("ConnectError" in problem for problem in problems)
