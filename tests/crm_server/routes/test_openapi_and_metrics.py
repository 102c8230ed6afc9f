"""The API describes itself (OpenAPI behind the key, Swagger UI open at /docs) and reports Prometheus metrics."""

from __future__ import annotations

import re

from crm_server.routes.openapi import build_openapi
from tests.crm_server.conftest import PROJECT_A
from tests.crm_server.server_process import CrmClient, CrmServerProcess, new_phone

CONTRACT_OPERATIONS = {
    ("post", "/integration/lovable/connect"),
    ("post", "/integration/lovable/pause"),
    ("post", "/integration/lovable/disconnect"),
    ("post", "/telegram/send"),
    ("post", "/telegram/read"),
    ("post", "/telegram/history/import"),
    ("get", "/telegram/history/import/{job_id}"),
    ("get", "/telegram/status"),
    ("post", "/telegram/auth/send-code"),
    ("post", "/telegram/auth/sign-in"),
    ("post", "/telegram/auth/password"),
    ("post", "/telegram/auth/qr"),
    ("get", "/telegram/auth/qr"),
    ("delete", "/telegram/accounts/{phone}"),
    ("get", "/media/{id}"),
    ("get", "/health"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
}
SANDBOX_OPERATIONS = {
    ("post", "/sandbox/qr-scan"),
    ("post", "/sandbox/users"),
    ("post", "/sandbox/accounts"),
    ("post", "/sandbox/incoming"),
    ("get", "/sandbox/sent"),
    ("post", "/sandbox/flood"),
    ("post", "/sandbox/outgoing"),
    ("post", "/sandbox/edit"),
    ("post", "/sandbox/delete"),
    ("post", "/sandbox/read"),
    ("get", "/sandbox/reads"),
    ("post", "/sandbox/service-message"),
    ("post", "/sandbox/gap"),
}


def operations(spec: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, methods in spec["paths"].items() for method in methods}


def test_openapi_describes_every_contract_route_and_the_sandbox_ones_in_sandbox_mode(admin: CrmClient) -> None:
    spec = admin.ok(admin.get("/openapi.json"))
    assert spec["openapi"].startswith("3.")
    assert CONTRACT_OPERATIONS | SANDBOX_OPERATIONS <= operations(spec)
    send = spec["paths"]["/telegram/send"]["post"]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SendRequest"}
    schema = spec["components"]["schemas"]["SendRequest"]
    assert set(schema["required"]) == {"project_id", "phone", "to"}
    assert schema["properties"]["text"]["anyOf"][0]["maxLength"] == 4096
    assert {"429", "503"} <= set(send["responses"])


def test_without_the_sandbox_the_sandbox_routes_are_not_described() -> None:
    spec = build_openapi(sandbox=False)
    assert operations(spec) == CONTRACT_OPERATIONS


def test_the_docs_page_opens_without_a_key_and_loads_only_its_own_files(crm_server: CrmServerProcess) -> None:
    anonymous = crm_server.client(None)
    try:
        response = anonymous.get("/docs")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        sources = re.findall(r"(?:src|href)='([^']+)'", response.text)
        assert sources and all(source.startswith("docs/assets/") for source in sources)
        for source in sources:
            asset = anonymous.get(f"/{source}")
            assert asset.status_code == 200 and len(asset.content) > 100, source
        assert 'data-key-header="X-API-Key"' in response.text
        assert anonymous.get("/docs/assets/..%2Fsettings.py").status_code == 404
        assert anonymous.get("/openapi.json").status_code == 401  # the description itself stays behind the key
    finally:
        anonymous.close()


def test_the_description_names_the_address_it_was_asked_at(admin: CrmClient) -> None:
    spec = admin.ok(admin.get("/openapi.json"))
    assert spec["servers"] == [{"url": str(admin.http.base_url).rstrip("/")}]


def test_metrics_count_sends_and_errors_and_report_connected_accounts(admin: CrmClient) -> None:
    phone = new_phone()
    admin.login(PROJECT_A, phone)
    user_phone = new_phone()
    admin.user(user_phone, username=f"m{user_phone[1:]}")
    before = admin.get("/metrics").text
    assert admin.send(PROJECT_A, phone, f"@m{user_phone[1:]}", "counted").status_code == 200
    assert admin.send(PROJECT_A, phone, "@nobody_has_this_name", "counted too").status_code == 422
    after = admin.get("/metrics").text

    def value(text: str, sample: str) -> float:
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    assert value(after, 'crm_sends_total{outcome="sent"}') == value(before, 'crm_sends_total{outcome="sent"}') + 1
    assert value(after, 'crm_errors_total{code="RECIPIENT_NOT_FOUND"}') == (
        value(before, 'crm_errors_total{code="RECIPIENT_NOT_FOUND"}') + 1
    )
    assert value(after, "crm_accounts_connected") >= 1
    health = admin.ok(admin.get("/health"))
    assert health["accounts_connected"] == value(after, "crm_accounts_connected")
