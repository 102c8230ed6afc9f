"""The admin page in a real browser (Playwright driving Debian's Chromium, headless) against one `tgcrm up` stack.

The story a newcomer follows: sign in as the demo user, add a telegram_crm integration through the form (a bad phone
is refused with a message), log the sandbox account in (code, then its 2FA password), make a simulated user write,
see the message in the chat view, reply, and find the reply among what the account sent in the sandbox.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack_process import LOGIN_CODE, StackProcess

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
DELIVERY_TIMEOUT_MS = 45_000
_PHONES = itertools.count(int(time.time()) % 1_000_000)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium (apt install chromium)")


def new_phone() -> str:
    return f"+7998{next(_PHONES) % 10_000_000:07d}"


class Story:
    """What the tests of this module share as the story moves on."""

    account_phone = new_phone()
    account_password = "correct horse battery"
    sender_name = f"Anna {uuid.uuid4().hex[:6]}"
    sender_phone = new_phone()
    incoming_text = f"Hello from the browser test {uuid.uuid4().hex[:8]}"
    reply_text = f"Thanks, Anna! {uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def stack() -> Iterator[StackProcess]:
    with tempfile.TemporaryDirectory(prefix="tgcrm-admin-") as directory:
        process = StackProcess(Path(directory) / "state", name="admin")
        process.start()
        try:
            yield process
        finally:
            process.stop()


@pytest.fixture(scope="module")
def crm_admin(stack: StackProcess) -> Iterator[httpx.Client]:
    with stack.crm_admin() as client:
        yield client


@pytest.fixture(scope="module")
def page(stack: StackProcess) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, locale="en-US")
        context.set_default_timeout(30_000)
        browser_page = context.new_page()
        browser_page.goto(stack.values["ADMIN_URL"])
        try:
            yield browser_page
        finally:
            context.close()


def test_signs_in_as_the_demo_user(page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.click("#sign-in-demo")
    expect(page.locator("#workspace")).to_be_visible()
    expect(page.locator("#who")).to_contain_text("Demo Admin")
    expect(page.locator("#sandbox-card")).to_be_visible()
    expect(page.locator("#clients li", has_text="Ivan Petrov")).to_be_visible()


def test_the_form_comes_from_the_registry_and_refuses_a_bad_phone(page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.click("#add-integration")
    expect(page.locator("#integration-form")).to_be_visible()
    page.select_option("#provider-select", "telegram_crm")
    # Labels from GET /functions/v1/telegram-providers, English with the Russian beside it.
    expect(page.locator("label[for=field-crmPhoneNumber]")).to_contain_text("Telegram phone")
    expect(page.locator("label[for=field-crmPhoneNumber]")).to_contain_text("Телефон Telegram")
    page.fill("#field-crmPhoneNumber", "12ab")
    page.click("#integration-submit")
    expect(page.locator("#field-crmPhoneNumber-error")).to_contain_text("international format")
    expect(page.locator("#integrations tbody tr")).to_have_count(0)


def test_connects_and_logs_the_account_in_with_code_and_password(page,  # type: ignore[no-untyped-def]
                                                                  crm_admin: httpx.Client) -> None:
    from playwright.sync_api import expect

    # This sandbox account asks for a 2FA password after the code.
    created = crm_admin.post("/sandbox/accounts", json={"phone": Story.account_phone,
                                                        "password": Story.account_password})
    assert created.status_code == 200, created.text
    # Local mode prefilled the local crm_server and the demo organization's key.
    expect(page.locator("#field-crmApiUrl")).not_to_have_value("")
    expect(page.locator("#field-crmApiKey")).not_to_have_value("")
    page.fill("#field-crmPhoneNumber", Story.account_phone)
    page.fill("#field-name", "Sales")
    page.click("#integration-submit")

    expect(page.locator("#login-panel")).to_be_visible()
    expect(page.locator("#integrations tbody tr", has_text="Sales")).to_be_visible()
    page.click("#login-send-code")
    expect(page.locator("#login-step-code")).to_be_visible()
    page.fill("#login-code", "00000")
    page.click("#login-step-code button[type=submit]")
    expect(page.locator("#login-code-error")).not_to_be_empty()
    page.fill("#login-code", LOGIN_CODE)
    page.click("#login-step-code button[type=submit]")
    expect(page.locator("#login-step-password")).to_be_visible()
    page.fill("#login-password", Story.account_password)
    page.click("#login-step-password button[type=submit]")
    expect(page.locator("#login-done")).to_be_visible()
    row = page.locator("#integrations tbody tr", has_text="Sales")
    expect(row.locator("[data-state]")).to_have_attribute("data-state", "authorized")
    expect(row.locator(".badge-primary")).to_be_visible()


def test_a_simulated_user_writes_and_the_message_shows_in_the_chat(page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.click("#login-close")
    page.select_option("#sandbox-from", "new")
    page.fill("#sandbox-phone", Story.sender_phone)
    page.fill("#sandbox-name", Story.sender_name)
    page.fill("#sandbox-text", Story.incoming_text)
    page.click("#sandbox-send")
    expect(page.locator("#notice")).to_have_class("notice info")

    # The page polls: the new client appears once crm_server has delivered the webhook.
    client = page.locator("#clients li", has_text=Story.sender_name)
    expect(client).to_be_visible(timeout=DELIVERY_TIMEOUT_MS)
    client.click()
    expect(page.locator("#chat-title")).to_have_text(Story.sender_name)
    expect(page.locator("#messages .bubble.in", has_text=Story.incoming_text)).to_be_visible()


def test_a_reply_from_the_chat_view_reaches_the_sandbox(page, stack: StackProcess,  # type: ignore[no-untyped-def]
                                                        crm_admin: httpx.Client) -> None:
    from playwright.sync_api import expect

    page.fill("#reply-text", Story.reply_text)
    page.click("#reply-send")
    expect(page.locator("#messages .bubble.out", has_text=Story.reply_text)).to_be_visible()
    expect(page.locator("#reply-text")).to_have_value("")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top of a full-page capture
    page.screenshot(path=str(ARTIFACTS / "admin_chat_view.png"), full_page=True)

    sent = crm_admin.get("/sandbox/sent", params={"account_phone": Story.account_phone})
    assert sent.status_code == 200
    assert Story.reply_text in [entry["text"] for entry in sent.json()]


def test_a_reply_to_a_demo_client_of_the_seed_is_sent(page,  # type: ignore[no-untyped-def]
                                                       crm_admin: httpx.Client) -> None:
    from playwright.sync_api import expect

    # What a newcomer tries first: the demo clients are simulated users of the sandbox.
    page.click("#clients li:has-text('Ivan Petrov')")
    expect(page.locator("#chat-title")).to_have_text("Ivan Petrov")
    text = f"Hello Ivan {uuid.uuid4().hex[:8]}"
    page.fill("#reply-text", text)
    page.click("#reply-send")
    expect(page.locator("#messages .bubble.out", has_text=text)).to_be_visible()
    expect(page.locator("#reply-text")).to_have_value("")
    expect(page.locator("#notice")).to_be_hidden()
    sent = crm_admin.get("/sandbox/sent", params={"account_phone": Story.account_phone})
    assert text in [entry["text"] for entry in sent.json()]
