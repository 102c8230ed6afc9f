"""What a caller learns from a server at `crmApiUrl`: a fixed answer per kind of failure, crm_server's own code when
it sent one, and never the server's words. Whatever listens there may be a service the caller wanted to read, or a
port they wanted to find open: real sockets on loopback stand for both (the host runs as the local stack does)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.crm_server.server_process import new_phone
from tests.functions.conftest import Organization
from tests.helpers.internal_service import Answer, http_answer, internal_service
from tests.helpers.net import free_port

MakeOrganization = Callable[[], Awaitable[Organization]]
SECRET = "internal-secret-4f1c"


async def connect_to(http: httpx.AsyncClient, organization: Organization, url: str) -> httpx.Response:
    return await http.post("/telegram-crm-connect", headers=organization.auth, json={
        "crmApiUrl": url, "crmApiKey": "some-key", "crmPhoneNumber": new_phone()})


@pytest.mark.parametrize("answer", [
    http_answer(500, f"Traceback: {SECRET}"),
    http_answer(404, f"<html><title>{SECRET}</title></html>", "text/html"),
    http_answer(400, json.dumps({"error": SECRET, "message": SECRET, "detail": SECRET}), "application/json"),
    http_answer(503, json.dumps({"message": SECRET}), "application/json"),
    http_answer(302, SECRET),
], ids=["500 text", "404 html", "400 json", "503 json", "302"])
async def test_an_error_answers_body_never_reaches_the_caller(
        http: httpx.AsyncClient, make_organization: MakeOrganization, answer: bytes) -> None:
    organization = await make_organization()
    with internal_service(answer) as service:
        response = await connect_to(http, organization, service.url())
        assert service.reached == 1
    assert response.status_code == 502, response.text
    assert SECRET not in response.text
    assert set(response.json()) == {"success", "error", "code"}


async def test_the_answer_is_the_same_for_every_server_that_fails_alike(
        http: httpx.AsyncClient, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    answers = []
    for body in ("one service", "another service with a longer page"):
        with internal_service(http_answer(500, body)) as service:
            answers.append((await connect_to(http, organization, service.url())).json())
    assert answers[0] == answers[1]


async def test_a_crm_server_code_is_relayed_but_not_its_message(
        http: httpx.AsyncClient, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    refusal = {"success": False, "error": SECRET, "code": "ACCOUNT_NOT_FOUND"}
    with internal_service(http_answer(404, json.dumps(refusal), "application/json")) as service:
        response = await connect_to(http, organization, service.url())
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "ACCOUNT_NOT_FOUND"
    assert SECRET not in response.text


async def test_a_crm_server_code_our_caller_cannot_act_on_comes_as_upstream_code(
        http: httpx.AsyncClient, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    refusal = {"success": False, "error": SECRET, "code": "PROJECT_FORBIDDEN"}
    with internal_service(http_answer(403, json.dumps(refusal), "application/json")) as service:
        response = await connect_to(http, organization, service.url())
    body = response.json()
    assert (response.status_code, body["code"], body["upstreamCode"]) == (502, "CRM_SERVER_AUTH_FAILED",
                                                                          "PROJECT_FORBIDDEN")
    assert SECRET not in response.text


async def test_a_code_that_is_not_crm_servers_is_not_relayed(
        http: httpx.AsyncClient, make_organization: MakeOrganization) -> None:
    organization = await make_organization()
    for status in (409, 429):
        refusal = {"success": False, "error": "no", "code": SECRET.upper()}
        with internal_service(http_answer(status, json.dumps(refusal), "application/json")) as service:
            response = await connect_to(http, organization, service.url())
        assert SECRET.upper() not in response.text, response.text
        assert "upstreamCode" not in response.json()


@pytest.mark.parametrize("answer", [None, b"\x00\x01 not http at all\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n"],
                         ids=["hangs up at once", "garbage", "another protocol"])
async def test_an_open_port_that_is_not_crm_server_looks_like_a_closed_one(
        http: httpx.AsyncClient, make_organization: MakeOrganization, answer: Answer) -> None:
    organization = await make_organization()
    closed = await connect_to(http, organization, f"http://127.0.0.1:{free_port()}")
    with internal_service(answer) as service:
        opened = await connect_to(http, organization, service.url())
        assert service.reached == 1
    assert closed.status_code == opened.status_code == 502
    assert closed.json() == opened.json()
    assert closed.json()["code"] == "CRM_SERVER_UNREACHABLE"
