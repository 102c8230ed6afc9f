"""Both API docs pages in a real browser (Playwright driving Debian's Chromium, headless), over real sockets:
crm_server's /docs opens without a key, takes it in Swagger UI's Authorize box, then lists the operations and sends
the key with "Try it out"; the functions host's /functions/v1/docs lists every function. Nothing loads from
elsewhere."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from functions.host import FUNCTIONS
from tests.crm_server.server_process import CrmServerProcess
from tests.e2e.stack_process import hermetic_env
from tests.e2e.test_admin_browser import CHROMIUM, CHROMIUM_ARGS
from tests.helpers.net import free_port

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium (apt install chromium)")


@pytest.fixture(scope="module")
def crm() -> Iterator[CrmServerProcess]:
    with tempfile.TemporaryDirectory(prefix="tgcrm-docs-") as directory:
        server = CrmServerProcess(Path(directory), name="docs").start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def functions_url() -> Iterator[str]:
    """`tgcrm functions` as a hosted project would run it (the docs need no database)."""
    port = free_port()
    env = {**hermetic_env(), "SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "unused",
           "SUPABASE_JWT_SECRET": "docs-browser-test-secret-docs-browser-test"}
    with tempfile.TemporaryDirectory(prefix="tgcrm-fn-docs-") as directory:
        process = subprocess.Popen([sys.executable, "-m", "tgcrm", "functions", "--port", str(port)], env=env,
                                   cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser, url: str):  # type: ignore[no-untyped-def]
    """A fresh page on `url` that records every request it makes."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.requests_made = []
    page.on("request", lambda request: page.requests_made.append(request))
    page.goto(url)
    return page


def only_its_own_origin(page, url: str) -> None:  # type: ignore[no-untyped-def]
    origin = urlsplit(url).netloc
    elsewhere = [request.url for request in page.requests_made
                 if not request.url.startswith("data:") and urlsplit(request.url).netloc != origin]
    assert elsewhere == []


def test_crm_server_docs_take_the_key_in_authorize_then_list_and_call_the_operations(browser, crm) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(browser, f"{crm.url}/docs")
    try:
        expect(page.locator(".info")).to_contain_text("needs an API key")
        expect(page.locator(".opblock")).to_have_count(0)
        page.click("button.authorize")
        page.fill(".modal-ux input[type=text], .modal-ux input[type=password]", crm.admin_key)
        page.click(".modal-ux button.modal-btn.authorize")
        page.click(".modal-ux button.btn-done")
        expect(page.locator(".opblock-summary-path[data-path='/telegram/send']")).to_be_visible()
        expect(page.locator(".opblock-summary-path[data-path='/integration/lovable/connect']")).to_be_visible()
        fetched = [request for request in page.requests_made if request.url.endswith("/openapi.json")]
        assert fetched and fetched[-1].headers.get("x-api-key") == crm.admin_key

        # "Try it out" on an admin-only route: answered 200, so the key went with it.
        metrics = page.locator(".opblock", has=page.locator(".opblock-summary-path[data-path='/metrics']"))
        metrics.locator(".opblock-summary").click()
        metrics.locator("button.try-out__btn").click()
        metrics.locator("button.execute").click()
        expect(metrics.locator(".live-responses-table tr.response td.response-col_status").first).to_have_text("200")
        only_its_own_origin(page, crm.url)
    finally:
        page.close()


def test_crm_server_docs_say_so_when_the_key_is_wrong(browser, crm) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(browser, f"{crm.url}/docs")
    try:
        page.click("button.authorize")
        page.fill(".modal-ux input[type=text], .modal-ux input[type=password]", "tgcrm_not_a_key")
        page.click(".modal-ux button.modal-btn.authorize")
        page.click(".modal-ux button.btn-done")
        expect(page.locator(".info")).to_contain_text("the key was refused (HTTP 401)")
        expect(page.locator(".opblock")).to_have_count(0)
    finally:
        page.close()


def test_functions_docs_list_every_function(browser, functions_url) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_page(browser, f"{functions_url}/functions/v1/docs")
    try:
        for function in FUNCTIONS:
            expect(page.locator(f".opblock-summary-path[data-path='/{function.name}']").first).to_be_visible()
        expect(page.get_by_text("telegram-message").first).to_be_visible()  # the webhook crm_server posts
        only_its_own_origin(page, functions_url)
    finally:
        page.close()
