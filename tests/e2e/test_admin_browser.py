"""The admin page in a real browser (Playwright driving Debian's Chromium, headless) against one `tgcrm up` stack.

The story a newcomer follows: sign in with the demo user's email and password (a wrong one is refused; the
session refreshes and signs out through /auth/v1), sign in with the one-click demo button, add a telegram_crm
integration through the form (a bad phone is refused with a message), log the sandbox account in (code, then its 2FA password), make a simulated user write,
see the message in the chat view, reply, and find the reply among what the account sent in the sandbox; reply to a
demo client of the seed. Then what goes wrong: a reply that fails stays beside its message with a retry that can
never send twice, errors read as plain sentences in the page's language, the language switch keeps the open chat,
the page works 390 px wide, and the login code takes digits only.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import struct
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from functions._shared.errors import FunctionError
from tests.e2e.stack_process import LOGIN_CODE, StackProcess
from tgcrm.admin.host_guard import AdminRequestRefused

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # DNS rebinding, simulated: this name resolves to the stack's loopback address.
                 f"--host-resolver-rules=MAP rebound.test 127.0.0.1"]
DELIVERY_TIMEOUT_MS = 45_000
# A reply the page shows from chat_messages (not its own bubble while sending): telegram-send has stored it.
STORED_REPLY = "#messages .bubble.out[data-message-id]"
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
def api(stack: StackProcess) -> Iterator[httpx.Client]:
    """The demo user's REST and functions client (what the page itself talks to), for setting the scene."""
    with stack.client() as client:
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


def stored_session(page) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return page.evaluate("() => JSON.parse(sessionStorage.getItem('tgcrm-admin-session') || 'null')")


def refresh_with(stack: StackProcess, refresh_token: str) -> httpx.Response:
    return httpx.post(f"{stack.values['SUPABASE_URL']}/auth/v1/token", params={"grant_type": "refresh_token"},
                      json={"refresh_token": refresh_token}, headers={"apikey": stack.values["SUPABASE_ANON_KEY"]})


def test_a_wrong_password_is_refused_beside_the_form(page, stack: StackProcess) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    # The demo user's email is prefilled locally; its password is what `tgcrm up` printed.
    expect(page.locator("#email-input")).to_have_value(stack.values["DEMO_USER_EMAIL"])
    page.fill("#password-input", "not the password")
    page.click("#sign-in-password")
    expect(page.locator("#password-sign-in-error")).to_have_text("Wrong email or password.")
    expect(page.locator("#workspace")).to_be_hidden()


def test_signs_in_with_email_and_password_refreshes_and_signs_out(  # type: ignore[no-untyped-def]
        page, stack: StackProcess) -> None:
    from playwright.sync_api import expect

    page.fill("#email-input", stack.values["DEMO_USER_EMAIL"])
    page.fill("#password-input", stack.values["DEMO_USER_PASSWORD"])
    page.click("#sign-in-password")
    expect(page.locator("#workspace")).to_be_visible()
    expect(page.locator("#who")).to_contain_text("Demo Admin")
    expect(page.locator("#clients li", has_text="Ivan Petrov")).to_be_visible()
    first = stored_session(page)
    assert first["userId"] == stack.values["DEMO_USER_ID"] and first["refreshToken"]
    # The README's story works after a password sign-in too: the form knows the local crm_server and its key.
    page.click("#add-integration")
    page.select_option("#provider-select", "telegram_crm")
    expect(page.locator("#field-crmApiUrl")).to_have_value(stack.values["CRM_URL"])
    expect(page.locator("#field-crmApiKey")).to_have_value(stack.values["CRM_DEMO_API_KEY"])
    page.click("#integration-cancel")

    assert page.evaluate("() => window.tgcrmAdmin.refreshSession()") is True
    second = stored_session(page)
    # Rotation: a new refresh token (the access token may be byte-equal when minted in the same second).
    assert second["refreshToken"] != first["refreshToken"] and second["expiresAt"] >= first["expiresAt"]
    expect(page.locator("#clients li", has_text="Ivan Petrov")).to_be_visible()

    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    assert stored_session(page) is None
    # Signing out ended the session on the server: its refresh token is dead there too.
    answer = refresh_with(stack, second["refreshToken"])
    assert (answer.status_code, answer.json()["error_code"]) == (400, "refresh_token_not_found")


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
    expect(page.locator(STORED_REPLY, has_text=Story.reply_text)).to_be_visible()
    expect(page.locator("#reply-text")).to_have_value("")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header stays on top of a full-page capture
    page.screenshot(path=str(ARTIFACTS / "admin_chat_view.png"), full_page=True)

    sent = crm_admin.get("/sandbox/sent", params={"account_phone": Story.account_phone})
    assert sent.status_code == 200
    assert Story.reply_text in [entry["text"] for entry in sent.json()]


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour (no imaging library needed), so the browser has something to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_a_photo_the_client_sends_shows_in_the_chat(page, crm_admin: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.select_option("#sandbox-from", label=f"{Story.sender_name} ({Story.sender_phone})")
    page.fill("#sandbox-text", "")
    page.set_input_files("#sandbox-file", files=[{"name": "receipt.png", "mimeType": "image/png",
                                                  "buffer": _png(120, 80, (200, 40, 40))}])
    page.click("#sandbox-send")
    expect(page.locator("#notice")).to_have_class("notice info")

    # Delivered (crm_server → webhook → chat-media), then shown through a signed URL the browser decodes.
    image = page.locator("#messages .bubble.in img.media-image").last
    expect(image).to_be_visible(timeout=DELIVERY_TIMEOUT_MS)
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [120, 80]
    source = image.get_attribute("src")
    assert "/storage/v1/object/sign/chat-media/" in source and "token=" in source  # never a public link
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    image.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "admin_chat_photo.png"))


def test_a_file_attached_to_a_reply_arrives_with_its_bytes_and_name(  # type: ignore[no-untyped-def]
        page, crm_admin: httpx.Client) -> None:
    from playwright.sync_api import expect

    data = b"%PDF-1.4\n" + uuid.uuid4().bytes * 2000
    page.set_input_files("#reply-file", files=[{"name": "offer.pdf", "mimeType": "application/pdf", "buffer": data}])
    expect(page.locator("#reply-file-chip")).to_contain_text("offer.pdf")
    page.fill("#reply-text", "Our offer, attached")
    page.click("#reply-send")
    stored = page.locator(STORED_REPLY, has_text="Our offer, attached")
    expect(stored).to_be_visible()
    expect(stored.locator("a.file")).to_contain_text("offer.pdf")
    expect(page.locator("#reply-file-chip")).to_be_hidden()

    sent = crm_admin.get("/sandbox/sent", params={"account_phone": Story.account_phone}).json()
    [entry] = [item for item in sent if item["text"] == "Our offer, attached"]
    assert entry["media"] == {"kind": "document", "file_name": "offer.pdf", "size": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()}


def test_a_reply_to_a_demo_client_of_the_seed_is_sent(page,  # type: ignore[no-untyped-def]
                                                       crm_admin: httpx.Client) -> None:
    from playwright.sync_api import expect

    # What a newcomer tries first: the demo clients are simulated users of the sandbox.
    page.click("#clients li:has-text('Ivan Petrov')")
    expect(page.locator("#chat-title")).to_have_text("Ivan Petrov")
    text = f"Hello Ivan {uuid.uuid4().hex[:8]}"
    page.fill("#reply-text", text)
    page.click("#reply-send")
    expect(page.locator(STORED_REPLY, has_text=text)).to_be_visible()
    expect(page.locator("#reply-text")).to_have_value("")
    expect(page.locator("#notice")).to_be_hidden()
    sent = crm_admin.get("/sandbox/sent", params={"account_phone": Story.account_phone})
    assert text in [entry["text"] for entry in sent.json()]


def test_the_conversation_shows_phone_sent_edited_deleted_messages_and_ticks(  # type: ignore[no-untyped-def]
        page, api: httpx.Client) -> None:
    """Rows as the conversation events store them (written here through REST as the demo user, the organization's
    own right): the page renders each kind, and opening the chat asks telegram-crm-mark-read once."""
    from playwright.sync_api import expect

    [client] = api.get("/rest/v1/clients", params={"select": "id,organization_id", "name": "eq.Maria Smirnova"}).json()
    tag = uuid.uuid4().hex[:6]
    base = {"organization_id": client["organization_id"], "client_id": client["id"], "messenger_type": "telegram"}
    rows = [
        {**base, "message_text": f"Can I pay by card? {tag}", "message_type": "client", "is_outgoing": False,
         "is_read": False, "message_status": "delivered", "edited_at": "2026-12-01T10:05:00Z",
         "metadata": {"edits": [{"text": f"Can I pay? {tag}", "edited_at": "2026-12-01T10:05:00Z"}]}},
        {**base, "message_text": f"Sure, by card {tag}", "message_type": "manager", "is_outgoing": True,
         "is_read": True, "message_status": "read", "metadata": {"source": "telegram_app"}},
        {**base, "message_text": f"Wrong chat, sorry {tag}", "message_type": "client", "is_outgoing": False,
         "is_read": True, "message_status": "delivered", "deleted_at": "2026-12-01T10:07:00Z"},
        {**base, "message_text": f"See you tomorrow {tag}", "message_type": "manager", "is_outgoing": True,
         "is_read": True, "message_status": "sent", "sender_name": "Anna"},
    ]
    for offset, row in enumerate(rows):
        row["created_at"] = f"2026-12-01T10:0{offset}:00Z"
        answer = api.post("/rest/v1/chat_messages", json=row)
        assert answer.status_code in (200, 201), answer.text

    marks: list[str] = []
    page.on("request", lambda request: marks.append(request.post_data or "")
            if request.url.endswith("/functions/v1/telegram-crm-mark-read") else None)
    page.click("#clients li:has-text('Maria Smirnova')")
    expect(page.locator("#chat-title")).to_have_text("Maria Smirnova")

    edited = page.locator("#messages .bubble.in", has_text=f"Can I pay by card? {tag}")
    expect(edited.locator(".meta .edited")).to_have_text("edited")
    expect(edited.locator(".meta .edited")).to_have_attribute("title", f"Before the edit: Can I pay? {tag}")

    from_app = page.locator("#messages .bubble.out", has_text=f"Sure, by card {tag}")
    expect(from_app).to_have_class(re.compile(r"\bfrom-app\b"))
    expect(from_app.locator(".meta")).to_contain_text("from the Telegram app")
    expect(from_app.locator(".ticks")).to_have_text("✓✓")
    expect(from_app.locator(".ticks")).to_have_attribute("data-status", "read")

    deleted = page.locator("#messages .bubble.in", has_text=f"Wrong chat, sorry {tag}")
    expect(deleted).to_have_class(re.compile(r"\bdeleted\b"))
    expect(deleted.locator(".meta .deleted-mark")).to_have_text("deleted")
    assert deleted.locator(".text").evaluate("(node) => getComputedStyle(node).textDecorationLine") == "line-through"

    sent = page.locator("#messages .bubble.out", has_text=f"See you tomorrow {tag}")
    expect(sent.locator(".ticks")).to_have_text("✓")
    expect(sent).not_to_have_class(re.compile(r"\bfrom-app\b"))

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin_chat_events.png"))
    # Opened with an unread message: read once, not again on every poll of the same messages.
    for _ in range(2):
        with page.expect_request(lambda request: "/rest/v1/chat_messages" in request.url, timeout=30_000):
            pass
    assert len([body for body in marks if client["id"] in body]) == 1


# --- when something goes wrong -----------------------------------------------------------------------------------

SEND_URL = "**/functions/v1/telegram-send"
INTERNAL_NAMES = ("crm_server", "telegram_crm", "webhook", "вебхук")


def assert_manager_text(text: str) -> None:
    """A sentence a manager can read: no HTTP status, no machine code, no name of our internals."""
    assert text.strip(), "empty error text"
    assert not re.search(r"\b[1-5]\d\d\b", text), f"an HTTP status in {text!r}"
    assert not re.search(r"\b[A-Z]+(?:_[A-Z]+)+\b", text), f"a machine code in {text!r}"
    assert "HTTP" not in text, text
    for name in INTERNAL_NAMES:
        assert name not in text.lower(), f"{name!r} in {text!r}"


def integration_id(api: httpx.Client, name: str = "Sales") -> str:
    rows = api.get("/rest/v1/messenger_integrations", params={"select": "id", "name": f"eq.{name}"}).json()
    assert len(rows) == 1, rows
    return str(rows[0]["id"])


def set_enabled(api: httpx.Client, enabled: bool) -> None:
    """Straight through REST, as the demo user: the page's own Enable control is not what these tests are about."""
    answer = api.patch("/rest/v1/messenger_integrations", params={"id": f"eq.{integration_id(api)}"},
                       json={"is_enabled": enabled})
    assert answer.status_code in (200, 204), answer.text


def sent_texts(crm_admin: httpx.Client) -> list[str]:
    return [entry["text"] for entry in crm_admin.get("/sandbox/sent",
                                                     params={"account_phone": Story.account_phone}).json()]


def send_keys(page) -> list[str | None]:  # type: ignore[no-untyped-def]
    """The Idempotency-Key of every telegram-send the page makes from now on."""
    keys: list[str | None] = []
    page.on("request", lambda request: keys.append(request.headers.get("idempotency-key"))
            if request.url.endswith("/functions/v1/telegram-send") and request.method == "POST" else None)
    return keys


def pause_polling(page, paused: bool) -> None:  # type: ignore[no-untyped-def]
    """As when the tab is in the background: the page skips its polls (so a test decides when it reloads)."""
    page.evaluate("(paused) => Object.defineProperty(document, 'hidden', {value: paused, configurable: true})",
                  paused)


def test_a_failed_reply_shows_beside_its_message_with_a_retry(page, api: httpx.Client,  # type: ignore[no-untyped-def]
                                                              crm_admin: httpx.Client) -> None:
    from playwright.sync_api import expect

    page.click("#clients li:has-text('Ivan Petrov')")
    keys = send_keys(page)
    text = f"Sent while disabled {uuid.uuid4().hex[:8]}"
    set_enabled(api, False)
    try:
        page.fill("#reply-text", text)
        page.click("#reply-send")
        failed = page.locator("#messages .bubble.out.failed", has_text=text)
        expect(failed).to_be_visible()
        expect(failed.locator(".send-error")).to_contain_text("Enable")
        assert_manager_text(failed.locator(".send-error").inner_text())
        expect(page.locator("#notice")).to_be_hidden()
        expect(page.locator("#reply-text")).to_have_value("")
    finally:
        set_enabled(api, True)

    failed.locator("button.retry").click()
    expect(page.locator("#messages .bubble.out.failed", has_text=text)).to_have_count(0)
    expect(page.locator(STORED_REPLY, has_text=text)).to_have_count(1)
    assert sent_texts(crm_admin).count(text) == 1
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys


def test_a_reply_telegram_cannot_deliver_says_why_beside_it(page, api: httpx.Client,  # type: ignore[no-untyped-def]
                                                            stack: StackProcess) -> None:
    from playwright.sync_api import expect

    name = f"Nobody {uuid.uuid4().hex[:6]}"
    created = api.post("/rest/v1/clients", json={"organization_id": stack.values["DEMO_ORGANIZATION_ID"],
                                                 "name": name, "phone": new_phone()})
    assert created.status_code == 201, created.text
    page.click("#refresh-clients")
    page.click(f"#clients li:has-text('{name}')")
    text = f"To nobody Telegram knows {uuid.uuid4().hex[:8]}"
    page.fill("#reply-text", text)
    page.click("#reply-send")
    failed = page.locator("#messages .bubble.out.failed", has_text=text)
    expect(failed.locator(".send-error")).to_contain_text("Telegram cannot find this client")
    assert_manager_text(failed.locator(".send-error").inner_text())
    expect(page.locator("#notice")).to_be_hidden()
    failed.locator("button.discard").click()
    expect(page.locator("#messages .bubble", has_text=text)).to_have_count(0)


def test_a_retry_after_a_lost_answer_sends_only_once(page,  # type: ignore[no-untyped-def]
                                                     crm_admin: httpx.Client) -> None:
    from playwright.sync_api import Route, expect

    def lose_the_answer(route: Route) -> None:
        route.fetch()  # the function sends and stores the message; the page never hears back
        route.fulfill(status=504, content_type="text/plain", body="Gateway Timeout")

    page.click("#clients li:has-text('Ivan Petrov')")
    keys = send_keys(page)
    text = f"Answer lost {uuid.uuid4().hex[:8]}"
    pause_polling(page, True)
    page.route(SEND_URL, lose_the_answer)
    try:
        page.fill("#reply-text", text)
        page.click("#reply-send")
        failed = page.locator("#messages .bubble.out.failed", has_text=text)
        expect(failed).to_be_visible()
        assert_manager_text(failed.locator(".send-error").inner_text())
    finally:
        page.unroute(SEND_URL)
    failed.locator("button.retry").click()
    expect(page.locator(STORED_REPLY, has_text=text)).to_have_count(1)
    expect(page.locator("#messages .bubble.out.failed", has_text=text)).to_have_count(0)
    pause_polling(page, False)
    assert sent_texts(crm_admin).count(text) == 1
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys


def test_a_lost_answer_shows_as_sent_once_the_stored_message_appears(page,  # type: ignore[no-untyped-def]
                                                                      crm_admin: httpx.Client) -> None:
    from playwright.sync_api import Route, expect

    def lose_the_answer(route: Route) -> None:
        route.fetch()
        route.abort("timedout")

    page.click("#clients li:has-text('Ivan Petrov')")
    text = f"Answer lost, not retried {uuid.uuid4().hex[:8]}"
    # No poll until the page has given up on the answer: on a loaded machine one could find the stored message
    # while the lost answer is still pending, and the page rightly never shows it as failed.
    pause_polling(page, True)
    page.route(SEND_URL, lose_the_answer)
    try:
        page.fill("#reply-text", text)
        page.click("#reply-send")
        expect(page.locator("#messages .bubble.out.failed", has_text=text)).to_be_visible()
    finally:
        page.unroute(SEND_URL)
        pause_polling(page, False)
    # The next poll finds the stored message under the same Idempotency-Key: it was sent after all.
    expect(page.locator("#messages .bubble.out.failed", has_text=text)).to_have_count(0)
    expect(page.locator(STORED_REPLY, has_text=text)).to_have_count(1)
    assert sent_texts(crm_admin).count(text) == 1


def every_error_code() -> list[str]:
    # The admin page's own refusals too (their base is never answered as such).
    codes, classes = set(), [FunctionError, *AdminRequestRefused.__subclasses__()]
    while classes:
        error = classes.pop()
        codes.add(error.code)
        classes.extend(error.__subclasses__())
    return sorted(codes | {"NOT_FOUND"})  # NOT_FOUND: the admin page's own local sign-in route


def test_every_error_code_reads_as_a_plain_sentence_in_both_languages(page) -> None:  # type: ignore[no-untyped-def]
    texts = page.evaluate("""(codes) => {
      const text = (error, lang, context) => window.tgcrmAdmin.errorText(error, lang, context);
      const out = {};
      for (const lang of ['en', 'ru']) {
        for (const code of codes) {
          for (const status of [400, 500]) {
            out[`${lang}:${code}:${status}`] = text({code, status}, lang);
            out[`${lang}:${code}:${status}:send`] = text({code, status}, lang, 'send');
          }
        }
        for (const status of [0, 400, 404, 409, 422, 429, 500, 502, 503, 504]) {
          out[`${lang}:fallback:${status}`] = text({code: 'SOMETHING_NEW', status}, lang);
          out[`${lang}:fallback:${status}:send`] = text({code: 'SOMETHING_NEW', status}, lang, 'send');
        }
      }
      return out;
    }""", every_error_code())
    for name, text in texts.items():
        assert_manager_text(text)
        if name.startswith("ru:"):
            assert re.search("[а-яА-Я]", text), f"{name} is not Russian: {text!r}"
    for lang in ("en", "ru"):
        # A code with its own sentence reads the same whatever the status; one without gets the status's fallback.
        unmapped = [code for code in every_error_code() for context in ("", ":send")
                    if texts[f"{lang}:{code}:400{context}"] != texts[f"{lang}:{code}:500{context}"]]
        assert unmapped == [], f"codes without their own {lang} sentence: {unmapped}"
        # A generic sentence per class of failure: unreachable, refused, failed on the server.
        assert len({texts[f"{lang}:fallback:{status}"] for status in (0, 400, 500)}) == 3


def test_switching_the_language_keeps_the_open_chat(page, api: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.click("#clients li:has-text('Ivan Petrov')")
    text = f"Not sent, to read in Russian {uuid.uuid4().hex[:8]}"
    set_enabled(api, False)
    try:
        page.fill("#reply-text", text)
        page.click("#reply-send")
        expect(page.locator("#messages .bubble.out.failed", has_text=text)).to_be_visible()
    finally:
        set_enabled(api, True)

    page.select_option("#lang", "ru")
    expect(page.locator("#clients-card h2")).to_have_text("Клиенты")
    expect(page.locator("#chat-title")).to_have_text("Ivan Petrov")
    expect(page.locator("#chat-subtitle")).to_contain_text("+79990000001")
    expect(page.locator("#clients li.selected")).to_contain_text("Ivan Petrov")
    expect(page.locator("#reply-form")).to_be_visible()
    failed = page.locator("#messages .bubble.out.failed", has_text=text)
    expect(failed.locator(".send-error")).to_contain_text(re.compile("[а-яА-Я]"))
    expect(failed.locator("button.retry")).to_have_text("Повторить")


def assert_fits_the_window(page, what: str) -> None:  # type: ignore[no-untyped-def]
    """Nothing sticks out sideways (so nothing scrolls horizontally, nor hides behind an overflow)."""
    overflowing = page.evaluate("""() => [...document.querySelectorAll('body *')].filter((node) => {
      const box = node.getBoundingClientRect();
      return box.width > 0 && box.height > 0 && (box.right > window.innerWidth + 0.5 || box.left < -0.5);
    }).map((node) => `${node.tagName.toLowerCase()}#${node.id}.${node.className}`)""")
    assert overflowing == [], f"{what}: wider than the window: {overflowing}"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), what


def test_the_page_works_390_px_wide(page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The failed message of the test before stays in the chat: every screenshot shows one.
    for lang in ("ru", "en"):
        page.select_option("#lang", lang)
        for width, height in ((390, 844), (1280, 900)):
            page.set_viewport_size({"width": width, "height": height})
            expect(page.locator("#chat-title")).to_have_text("Ivan Petrov")
            assert_fits_the_window(page, f"{lang} {width} px")
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(ARTIFACTS / f"admin_{lang}_{width}.png"), full_page=True)

    # The chat is usable at 390 px: open a client from the list, reply, see the reply.
    page.set_viewport_size({"width": 390, "height": 844})
    page.click("#clients li:has-text('Maria Smirnova')")
    expect(page.locator("#chat-title")).to_have_text("Maria Smirnova")
    expect(page.locator("#reply-text")).to_be_in_viewport()
    text = f"From a phone-sized window {uuid.uuid4().hex[:8]}"
    page.fill("#reply-text", text)
    page.click("#reply-send")
    expect(page.locator(STORED_REPLY, has_text=text)).to_be_in_viewport()
    expect(page.locator("#messages .bubble.out.failed")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "admin_en_390_chat.png"))
    page.set_viewport_size({"width": 1280, "height": 900})


def test_the_login_code_takes_digits_only(page, crm_admin: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    sign_ins: list[str] = []
    page.on("request", lambda request: sign_ins.append(request.post_data or "")
            if request.url.endswith("/functions/v1/telegram-crm-auth") and '"sign-in"' in (request.post_data or "")
            else None)
    page.evaluate("window.scrollTo(0, 0)")
    page.click("#add-integration")
    page.select_option("#provider-select", "telegram_crm")
    page.fill("#field-crmPhoneNumber", new_phone())
    page.fill("#field-name", "Support")
    page.click("#integration-submit")
    page.click("#login-send-code")
    for typed in ("12a45", "12 345", "１２３４５"):
        page.fill("#login-code", typed)
        page.click("#login-step-code button[type=submit]")
        expect(page.locator("#login-code-error")).to_contain_text("digits")
    assert sign_ins == []
    page.set_viewport_size({"width": 390, "height": 844})
    assert_fits_the_window(page, "the login panel at 390 px")
    page.locator("#login-panel").screenshot(path=str(ARTIFACTS / "admin_en_390_login.png"))
    page.set_viewport_size({"width": 1280, "height": 900})
    page.fill("#login-code", LOGIN_CODE)
    page.click("#login-step-code button[type=submit]")
    expect(page.locator("#login-done")).to_be_visible()
    assert len(sign_ins) == 1


# --- an integration's life, from the page ------------------------------------------------------------------------

def crm_webhook(crm_admin: httpx.Client, stack: StackProcess) -> dict | None:  # type: ignore[type-arg]
    """The Sales account's registration on crm_server (None when it has none), as crm_server itself reports it."""
    accounts = crm_admin.get("/telegram/status", params={
        "project_id": stack.values["DEMO_ORGANIZATION_ID"], "phone": Story.account_phone}).json()["accounts"]
    return accounts[0]["webhook"] if accounts else None


def wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_disabling_from_the_page_holds_messages_and_enabling_delivers_them(  # type: ignore[no-untyped-def]
        page, crm_admin: httpx.Client, stack: StackProcess) -> None:
    from playwright.sync_api import expect

    page.evaluate("window.scrollTo(0, 0)")
    switch = page.locator("#integrations tbody tr", has_text="Sales").locator("input[type=checkbox]")
    switch.uncheck()
    wait_for(lambda: (crm_webhook(crm_admin, stack) or {}).get("paused") is True)
    # The page says so: a manager must not wonder why nothing arrives.
    expect(page.locator("#integrations tbody tr", has_text="Sales")).to_contain_text("paused while disabled")
    text = f"Written while the integration is off {uuid.uuid4().hex[:8]}"
    written = crm_admin.post("/sandbox/incoming", json={"account_phone": Story.account_phone,
                                                        "from": Story.sender_phone, "text": text})
    assert written.status_code == 200, written.text
    wait_for(lambda: (crm_webhook(crm_admin, stack) or {}).get("pending") == 1)
    assert (crm_webhook(crm_admin, stack) or {})["failed"] == 0  # waiting, not a dead letter

    switch.check()
    page.click(f"#clients li:has-text('{Story.sender_name}')")
    expect(page.locator("#messages .bubble.in", has_text=text)).to_be_visible(timeout=DELIVERY_TIMEOUT_MS)
    assert (crm_webhook(crm_admin, stack) or {})["failed"] == 0


def test_removing_from_the_page_tells_the_server_and_keeps_the_chat(  # type: ignore[no-untyped-def]
        page, crm_admin: httpx.Client, stack: StackProcess) -> None:
    from playwright.sync_api import expect

    dialogs: list[str] = []

    def accept(dialog) -> None:  # type: ignore[no-untyped-def]
        dialogs.append(dialog.message)
        dialog.accept()  # remove it, and log the account out too

    page.on("dialog", accept)
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#integrations tbody tr", has_text="Sales").locator("button.danger").click()
    expect(page.locator("#integrations tbody tr", has_text="Sales")).to_have_count(0)
    assert len(dialogs) == 2, dialogs
    accounts = crm_admin.get("/telegram/status", params={
        "project_id": stack.values["DEMO_ORGANIZATION_ID"]}).json()["accounts"]
    assert Story.account_phone not in {account["phone"] for account in accounts}  # logged out, forgotten
    page.click(f"#clients li:has-text('{Story.sender_name}')")
    expect(page.locator("#messages .bubble.in", has_text=Story.incoming_text)).to_be_visible()  # history stays


def test_a_page_on_a_name_rebound_to_loopback_gets_no_sign_in(page, stack: StackProcess) -> None:  # type: ignore[no-untyped-def]
    """DNS rebinding: an attacker's page on rebound.test, whose name now points at 127.0.0.1. To the browser it is
    same-origin with the stack's port under that name, so it could read the demo user's JWT if the server answered."""
    origin = f"http://rebound.test:{stack.api_port}"
    attacker = page.context.new_page()
    try:
        assert attacker.goto(f"{origin}/admin/").status == 403
        # A document of that origin loaded from 127.0.0.1 (as after the rebinding), asking for the admin's answers.
        assert attacker.goto(f"{origin}/health").status == 200
        answers = attacker.evaluate("""async () => {
          const out = {};
          for (const [path, method] of [['/admin/local/session', 'POST'], ['/admin/config.json', 'GET'],
                                        ['/admin/static/admin.js', 'GET']]) {
            const response = await fetch(path, { method });
            out[path] = { status: response.status, body: await response.text() };
          }
          return out;
        }""")
        for path, answer in answers.items():
            assert answer["status"] == 403, (path, answer)
            assert '"code":"HOST_NOT_ALLOWED"' in answer["body"] and "accessToken" not in answer["body"], answer
    finally:
        attacker.close()
