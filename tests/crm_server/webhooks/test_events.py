"""The event values own their wire form: `type` first, ids derived from the Telegram fact, outbox keys that never
meet a message id; and the service user's notices yield device and place, never their text or a code."""

from __future__ import annotations

import datetime

from crm_server.store.outbox import encode_payload
from crm_server.telegram.service_notices import login_notice
from crm_server.webhooks.events import (
    ACCOUNT_LANE,
    UNRESOLVED_LANE,
    AccountStatusChanged,
    DeletedMessages,
    EditedMessage,
    MessagesRead,
    event_type_of,
)
from crm_server.webhooks.incoming import IncomingMessage

WHEN = datetime.datetime(2026, 12, 2, 0, 13, 25, tzinfo=datetime.timezone.utc)


def edit(at: datetime.datetime) -> EditedMessage:
    return EditedMessage(project_id="org", account_phone="+1555", chat_id=42, message_id=7, text="new",
                         edit_date=at, outgoing=False)


def test_ids_are_per_fact_and_the_body_says_its_type_first() -> None:
    assert edit(WHEN).event_id == edit(WHEN).event_id
    assert edit(WHEN).event_id != edit(WHEN + datetime.timedelta(seconds=1)).event_id  # a second edit: new event
    row = edit(WHEN).outbox_event()
    assert row.message_id < 0 and row.chat_id == "42"
    body = encode_payload(row.payload).encode()
    assert event_type_of(body) == "message.edited"
    assert event_type_of(b'{"event_id":"evt_old"}') == "message"  # rows stored before types
    message = IncomingMessage(project_id="org", account_phone="+1555", chat_id=42, message_id=7, from_id=42,
                              from_username=None, from_first_name=None, from_last_name=None, from_phone=None,
                              text="hi", date=WHEN)
    assert event_type_of(encode_payload(message.payload()).encode()) == "message"
    assert message.outbox_event().message_id == 7 and message.outbox_event().known_message


def test_events_without_a_chat_have_lanes_of_their_own() -> None:
    unresolved = DeletedMessages(project_id="org", account_phone="+1555", chat_id=None, message_ids=(3, 1), date=WHEN)
    assert unresolved.outbox_event().chat_id == UNRESOLVED_LANE
    assert unresolved.payload()["chat_id"] is None and unresolved.payload()["message_ids"] == [1, 3]
    same = DeletedMessages(project_id="org", account_phone="+1555", chat_id=None, message_ids=(1, 3), date=WHEN)
    assert same.event_id == unresolved.event_id
    status = AccountStatusChanged(project_id="org", account_phone="+1555", state="logged_out", reason="revoked",
                                  date=WHEN)
    assert status.outbox_event().chat_id == ACCOUNT_LANE
    read = MessagesRead(project_id="org", account_phone="+1555", chat_id=42, max_id=9, direction="outbox",
                        date=WHEN)
    assert read.payload()["direction"] == "outbox" and read.payload()["max_id"] == 9


def test_login_notices_keep_device_and_place_and_never_a_code() -> None:
    code = login_notice("Login code: 40718. Do not give this code to anyone, even if they say they are from Telegram!")
    assert code is not None and (code.alert, code.device, code.location) == ("login_code", None, None)
    russian = login_notice("Код для входа в Telegram: 40718. Не давайте код никому.")
    assert russian is not None and russian.alert == "login_code"
    new_login = login_notice("New login. Dear Anna, we detected a login into your account.\n\n"
                             "Device: Telegram Desktop, Windows 10\nLocation: Berlin, Germany\n")
    assert new_login is not None
    assert (new_login.alert, new_login.device, new_login.location) == (
        "new_login", "Telegram Desktop, Windows 10", "Berlin, Germany")
    sneaky = login_notice("New login.\nDevice: code 40718\nLocation: Berlin")
    assert sneaky is not None and sneaky.device is None and sneaky.location == "Berlin"
    assert login_notice("Telegram has updated its terms of service.") is None
