"""Fuzzing every route of crm_server and of the functions over real sockets: Hypothesis-generated bodies, headers,
query strings and path segments, 2,000 cases per route (fired in concurrent batches). No answer may be a 5xx other
than an upstream's contract error, none may hang, and every 4xx is in the contract's error shape.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import jwt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from functions._shared import signature
from tests.crm_server.server_process import new_phone
from tests.reliability.fuzz_requests import (
    NASTY_TEXT,
    Answer,
    Firing,
    FuzzRequest,
    Route,
    fuzzed,
    path_segment,
    problems,
    requests_for,
)
from tests.reliability.stack import ReliabilityStack

pytestmark = pytest.mark.slow

CASES_PER_ROUTE = 2000
BATCH = 20  # requests fired concurrently per Hypothesis example

# 5xx answers that are an upstream's error in the contract's shape (crm_server → Telegram, functions → crm_server).
UPSTREAM_CODES = frozenset({"TELEGRAM_ERROR", "ACCOUNT_DISCONNECTED", "PROVIDER_ERROR", "CRM_SERVER_UNREACHABLE",
                            "CRM_SERVER_ERROR", "CRM_SERVER_AUTH_FAILED", "WAPPI_ERROR"})


@dataclass(frozen=True)
class Targets:
    stack: ReliabilityStack
    organization_id: str
    other_organization_id: str
    token: str
    other_token: str
    expired_token: str
    project_key: str
    other_project_key: str
    account_phone: str
    spare_phones: tuple[str, ...]
    user_phone: str
    user_id: int
    integration_id: str
    client_id: str
    webhook_key: str
    webhook_secret: str


@pytest.fixture(scope="module")
async def targets(reliability_stack: ReliabilityStack) -> AsyncIterator[Targets]:
    """An organization with a logged-in account, a client and a webhook, plus a second one to cross over to."""
    stack = reliability_stack
    stack.ensure_running()
    tenant = await stack.tenant("Fuzz")
    other = await stack.tenant("Fuzz other")
    project_key = await asyncio.to_thread(stack.project_key, tenant.organization_id)
    other_key = await asyncio.to_thread(stack.project_key, other.organization_id)
    account = await stack.connect_account(tenant, crm_key=project_key)
    user_id, user_phone, client_id = await stack.client_who_wrote(tenant, account.phone, "hi", timeout=30,
                                                                  first_name="Fuzzy")
    webhook_key, webhook_secret = await stack.integration_secret(account.integration_id)
    expired = jwt.encode({"sub": tenant.user_id, "role": "authenticated", "aud": "authenticated",
                          "exp": int(time.time()) - 3600}, stack.keys.jwt_secret, algorithm="HS256")
    yield Targets(stack, tenant.organization_id, other.organization_id, tenant.token, other.token, expired,
                  project_key, other_key, account.phone, (new_phone(), new_phone()), user_phone, user_id,
                  account.integration_id, client_id, webhook_key, webhook_secret)
    # The fuzzed webhooks point anywhere: stop their retries from running on behind the next tests.
    for phone in (account.phone,):
        await stack.crm_call("DELETE", f"/telegram/accounts/{phone}", params={"project_id": tenant.organization_id})
    await stack.close()


@pytest.fixture(scope="module")
def firing() -> Iterator[Firing]:
    fire = Firing(timeout=20.0)
    yield fire
    fire.close()


def _crm_routes(t: Targets) -> list[Route]:
    phones = st.sampled_from([t.account_phone, *t.spare_phones])
    projects = st.sampled_from([t.organization_id, t.other_organization_id, "fuzz-project"])
    recipients = st.sampled_from([t.user_phone, f"@u{t.user_phone[1:]}", t.user_id, "@nobody_here", 12])
    urls = st.sampled_from(["http://127.0.0.1:9/fuzz", "https://127.0.0.1:9/hook", "http://[::1]:9/x",
                            "ftp://127.0.0.1/x", "http://10.1.2.3/x"])
    text = st.text(max_size=60)
    body = {
        "connect": {"project_id": fuzzed(projects), "webhook_url": fuzzed(urls), "phone": fuzzed(phones),
                    "secret": fuzzed(st.text(min_size=8, max_size=30)),
                    "events": fuzzed(["message"], ["message", "message.read"], ["nope"], [], "message")},
        "send": {"project_id": fuzzed(projects), "phone": fuzzed(phones), "to": fuzzed(recipients),
                 "text": fuzzed(text), "file_url": fuzzed(urls), "file_name": fuzzed("a.pdf"),
                 "file_type": fuzzed("image/png", "application/pdf"), "reply_to": fuzzed(1, 2**40)},
        "code": {"project_id": fuzzed(projects), "phone": fuzzed(phones)},
        "sign_in": {"project_id": fuzzed(projects), "phone": fuzzed(phones), "code": fuzzed("12345", "00000")},
        "password": {"project_id": fuzzed(projects), "phone": fuzzed(phones), "password": fuzzed(text)},
    }
    idempotency = {"Idempotency-Key": st.one_of(st.uuids().map(str), st.text(max_size=300).map(
        lambda value: value.encode("ascii", "replace").decode().replace("\r", "").replace("\n", "")))}
    project_query = {"project_id": fuzzed(projects)}
    account_phones = st.sampled_from([*t.spare_phones, t.account_phone])
    sandbox_users = st.from_regex(r"\+1555[0-9]{7}", fullmatch=True)
    return [
        Route("crm", "POST", "/telegram/auth/qr", {"project_id": fuzzed(projects), "phone": fuzzed(phones)}),
        Route("crm", "GET", "/telegram/auth/qr", query={"project_id": fuzzed(projects), "login_id": fuzzed(
            "A" * 32, st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True))}),
        Route("crm", "POST", "/sandbox/qr-scan", {"url": fuzzed("tg://login?token=AAAA", st.from_regex(
            r"tg://login\?token=[A-Za-z0-9_-]{1,60}", fullmatch=True)), "phone": fuzzed(account_phones)}),
        Route("crm", "POST", "/integration/lovable/connect", body["connect"]),
        Route("crm", "POST", "/telegram/send", body["send"], extra_headers=idempotency),
        Route("crm", "GET", "/telegram/status", query={"project_id": fuzzed(projects), "phone": fuzzed(phones)}),
        Route("crm", "POST", "/telegram/auth/send-code", body["code"]),
        Route("crm", "POST", "/telegram/auth/sign-in", body["sign_in"]),
        Route("crm", "POST", "/telegram/auth/password", body["password"]),
        # Only the spare phones: logging the fuzzed account out would end the other routes' deeper paths.
        Route("crm", "DELETE", "/telegram/accounts/{}", query=project_query, segment=path_segment(*t.spare_phones)),
        Route("crm", "GET", "/webhooks/deliveries", query={
            "project_id": fuzzed(projects), "state": fuzzed("failed", "pending", "delivered", "dead"),
            "limit": fuzzed("1", "1000", "0", "1001")}),
        Route("crm", "POST", "/webhooks/deliveries/{}/retry", segment=path_segment(1, 2, 2**62, 0, -1)),
        Route("crm", "GET", "/health"),
        Route("crm", "GET", "/metrics"),
        Route("crm", "GET", "/openapi.json"),
        Route("crm", "GET", "/docs"),
        Route("crm", "POST", "/sandbox/users", {"phone": fuzzed(sandbox_users), "username": fuzzed(
            st.from_regex(r"[a-z][a-z0-9_]{2,20}", fullmatch=True)), "first_name": fuzzed(text),
            "last_name": fuzzed(text), "privacy_restricted": fuzzed(True, False)}),
        Route("crm", "POST", "/sandbox/accounts", {"phone": fuzzed(st.sampled_from(t.spare_phones)),
                                                   "password": fuzzed(st.text(min_size=1, max_size=10))}),
        Route("crm", "POST", "/sandbox/incoming", {"account_phone": fuzzed(account_phones),
                                                   "from": fuzzed(recipients), "text": fuzzed(text)}),
        Route("crm", "GET", "/sandbox/sent", query={"account_phone": fuzzed(account_phones)}),
        Route("crm", "POST", "/sandbox/flood", {"account_phone": fuzzed(st.sampled_from(t.spare_phones)),
                                                "seconds": fuzzed(1, 0, -5, 10**12)}),
        Route("crm", "POST", "/sandbox/revoke", {"account_phone": fuzzed(st.sampled_from(t.spare_phones))}),
        Route("crm", "GET", "/sandbox/requests"),
        Route("crm", "POST", "/telegram/read", {"project_id": fuzzed(projects), "phone": fuzzed(phones),
                                                "chat": fuzzed(recipients), "max_id": fuzzed(0, 1, -1, 2**40)}),
        Route("crm", "POST", "/sandbox/outgoing", {"account_phone": fuzzed(account_phones),
                                                   "to": fuzzed(recipients), "text": fuzzed(text)}),
        Route("crm", "POST", "/sandbox/edit", {"account_phone": fuzzed(account_phones), "from": fuzzed(recipients),
                                               "message_id": fuzzed(1, 2, 0, 2**40), "text": fuzzed(text)}),
        Route("crm", "POST", "/sandbox/delete", {"account_phone": fuzzed(account_phones),
                                                 "message_ids": fuzzed([1], [2**40], [], [0], list(range(200))),
                                                 "revoke": fuzzed(True, False)}),
        Route("crm", "POST", "/sandbox/read", {"account_phone": fuzzed(account_phones), "from": fuzzed(recipients),
                                               "max_id": fuzzed(1, 0, 2**40), "peer": fuzzed(recipients)}),
        Route("crm", "POST", "/sandbox/service-message", {"account_phone": fuzzed(account_phones),
                                                          "text": fuzzed(text)}),
        Route("crm", "POST", "/sandbox/gap", {"account_phone": fuzzed(account_phones)}),
    ]


def _function_routes(t: Targets) -> list[Route]:
    ids = st.sampled_from([t.integration_id, str(uuid.uuid4()), "not-a-uuid"])
    clients = st.sampled_from([t.client_id, str(uuid.uuid4())])
    text = st.text(max_size=60)
    phones = st.sampled_from([t.account_phone, *t.spare_phones])
    send = {"clientId": fuzzed(clients), "text": fuzzed(text), "fileUrl": fuzzed("https://127.0.0.1:9/f.png"),
            "fileName": fuzzed("f.png"), "fileType": fuzzed("image/png"), "integrationId": fuzzed(ids),
            "senderName": fuzzed(text)}
    idempotency = {"Idempotency-Key": st.one_of(st.uuids().map(str), NASTY_TEXT.map(
        lambda value: value.encode("ascii", "replace").decode().replace("\x00", "")))}
    webhook_payload = {
        "event_id": fuzzed(st.uuids().map(str)), "project_id": fuzzed(t.organization_id, t.other_organization_id),
        "account_phone": fuzzed(t.account_phone.lstrip("+")), "from_id": fuzzed(t.user_id, st.integers(1, 2**40)),
        "from_username": fuzzed("fuzzy"), "from_first_name": fuzzed(text), "from_last_name": fuzzed(text),
        "from_phone": fuzzed(t.user_phone), "chat_id": fuzzed(t.user_id), "message_id": fuzzed(st.integers(1, 2**40)),
        "text": fuzzed(text), "timestamp": fuzzed("2026-01-01T00:00:00Z", st.datetimes().map(
            lambda moment: moment.isoformat())),
        "file_url": fuzzed("https://127.0.0.1:9/f"), "file_type": fuzzed("photo"), "file_name": fuzzed("f.jpg")}

    def sign(request: FuzzRequest, properly: bool) -> FuzzRequest:
        """Half the webhooks carry the integration's real secret and a valid signature of the drawn body."""
        if not properly:
            return request
        body = request.body or b""
        try:
            event_id = str(json.loads(body).get("event_id") or uuid.uuid4())
        except (ValueError, AttributeError, RecursionError):
            event_id = str(uuid.uuid4())
        event_id = "".join(ch for ch in event_id if " " < ch <= "~") or "x"  # a header carries printable ASCII
        sent_at = int(time.time())
        headers = dict(request.headers)
        headers.update({"x-lovable-secret": t.webhook_secret, "webhook-id": event_id,
                        "webhook-timestamp": str(sent_at),
                        "webhook-signature": signature.sign(t.webhook_secret, event_id, sent_at, body)})
        params = tuple(item for item in request.params if item[0] != "key") + (("key", t.webhook_key),)
        return FuzzRequest(request.method, request.url, params, tuple(headers.items()), request.body)

    return [
        Route("fn", "POST", "/telegram-crm-connect", {
            "crmApiUrl": fuzzed(t.stack.crm.url, "http://127.0.0.1:9", "https://127.0.0.1:9"),
            "crmApiKey": fuzzed(t.project_key, t.other_project_key), "crmPhoneNumber": fuzzed(phones),
            "integrationId": fuzzed(ids), "name": fuzzed(text)}),
        Route("fn", "POST", "/telegram-crm-send", send, extra_headers=idempotency),
        Route("fn", "POST", "/telegram-crm-webhook", webhook_payload,
              query={"key": fuzzed(t.webhook_key, "k" * 32)}, sign=sign),
        Route("fn", "POST", "/telegram-send", send, extra_headers=idempotency),
        Route("fn", "GET", "/telegram-providers"),
        Route("fn", "POST", "/telegram-crm-auth", {"integrationId": fuzzed(ids), "step": fuzzed(
            "send-code", "sign-in", "password", "qr", "qr-status"), "code": fuzzed("12345"), "password": fuzzed(text),
            "loginId": fuzzed("A" * 32, st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True))}),
        Route("fn", "GET", "/telegram-crm-status", {"integrationId": fuzzed(ids)},
              query={"integrationId": fuzzed(ids)}),
        Route("fn", "POST", "/telegram-crm-sandbox", {"integrationId": fuzzed(ids), "fromPhone": fuzzed(
            st.from_regex(r"\+1555[0-9]{7}", fullmatch=True)), "fromName": fuzzed(text),
            "fromUsername": fuzzed("fuzzer"), "text": fuzzed(text)}),
        Route("fn", "POST", "/telegram-integration-save", {"provider": fuzzed("wappi", "telegram_crm"),
                                                           "integrationId": fuzzed(ids), "name": fuzzed(text),
                                                           "profileId": fuzzed("p1"), "apiToken": fuzzed("t1")}),
    ]


ROUTE_NAMES = [
    *(f"crm {name}" for name in ("qr-start", "qr-status", "sandbox-qr-scan")),
    *(f"crm {name}" for name in ("connect", "send", "status", "send-code", "sign-in", "password", "logout",
                                 "deliveries", "retry", "health", "metrics", "openapi", "docs", "sandbox-users",
                                 "sandbox-accounts", "sandbox-incoming", "sandbox-sent", "sandbox-flood",
                                 "sandbox-revoke", "sandbox-requests", "read", "sandbox-outgoing", "sandbox-edit",
                                 "sandbox-delete", "sandbox-read", "sandbox-service-message", "sandbox-gap")),
    *(f"fn {name}" for name in ("telegram-crm-connect", "telegram-crm-send", "telegram-crm-webhook", "telegram-send",
                                "telegram-providers", "telegram-crm-auth", "telegram-crm-status",
                                "telegram-crm-sandbox", "telegram-integration-save")),
]


@pytest.mark.parametrize("route_index", range(len(ROUTE_NAMES)), ids=ROUTE_NAMES)
def test_fuzzed_requests_get_no_5xx_no_hang_and_contract_errors(route_index: int, targets: Targets,
                                                               firing: Firing) -> None:
    t = targets
    routes = _crm_routes(t) + _function_routes(t)
    assert len(routes) == len(ROUTE_NAMES)
    route = routes[route_index]
    if route.service == "crm":
        base = t.stack.crm.url
        admin = {"X-API-Key": t.stack.crm.admin_key or ""}
        auth = st.sampled_from([admin] * 6 + [{"X-API-Key": t.project_key}, {"X-API-Key": t.other_project_key},
                                              {}, {"X-API-Key": "wrong"}, {"X-API-Key": "k" * 300}])
        max_body = 70_000
    else:
        base = t.stack.functions_url
        bearer = {"Authorization": f"Bearer {t.token}"}
        auth = st.sampled_from([bearer] * 6 + [{"Authorization": f"Bearer {t.other_token}"},
                                               {"Authorization": f"Bearer {t.expired_token}"},
                                               {"Authorization": f"Bearer {t.stack.keys.anon_key}"},
                                               {"Authorization": "Bearer not.a.jwt"}, {"Authorization": "Basic eA=="},
                                               {}])
        max_body = 20_000
    fired = 0
    slowest = 0.0
    in_flight: list[concurrent.futures.Future[list[Answer]]] = []

    def check(answers: list[Answer]) -> None:
        nonlocal fired, slowest
        fired += len(answers)
        failures = []
        for answer in answers:
            slowest = max(slowest, answer.seconds)
            found = problems(answer, UPSTREAM_CODES)
            if answer.status is not None and answer.status >= 500 and "answered 500" in answer.text:
                found.append("an upstream's 500 passed on")
            if found:
                failures.append(f"{answer.request.describe()}\n  -> {answer.status} {answer.text[:300]!r}: "
                                f"{'; '.join(found)}")
        assert not failures, f"{route.name}: {len(failures)} bad answers, e.g.\n" + "\n".join(failures[:3])

    # No shrinking: a batch is 20 live requests, and the failing ones are printed in full. One batch is in flight
    # while the next is drawn, so a failure may surface one example late; the message names the requests.
    @settings(max_examples=CASES_PER_ROUTE // BATCH, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(requests_for(route, base, auth, max_body), min_size=BATCH, max_size=BATCH))
    def fuzz(batch: list[FuzzRequest]) -> None:
        in_flight.append(firing.submit(batch))
        if len(in_flight) > 1:
            check(in_flight.pop(0).result(60))

    fuzz()
    for pending in in_flight:
        check(pending.result(60))
    assert fired >= CASES_PER_ROUTE, f"{route.name}: only {fired} cases ran"
    # Every answer came back within the client's timeout (a hang fails above); none came close to it.
    assert slowest < 15.0, f"{route.name}: an answer took {slowest:.1f}s"
