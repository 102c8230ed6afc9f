"""Several processes on one world file are one Telegram: what another process writes reaches this process's live
Telethon clients as pushes (pts order, each once, no getDifference needed), a termination there disconnects a client
here, and login codes, 2FA challenges, auth keys and QR tokens made in one process are valid in the other."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from telethon import errors, events
from telethon.password import compute_check
from telethon.sessions import StringSession
from telethon.tl import functions

from crm_server.sandbox import LOGIN_CODE, SandboxWorld, install, uninstall

from .client_steps import collect_incoming, log_in, wait_for
from .world_process import WorldProcess

_PHONES = itertools.count(1)


def new_phone() -> str:
    """The tests of this module share one world file: each account and user gets a phone of its own."""
    return f"+7999444{next(_PHONES):04d}"


@pytest.fixture(scope="module")
def shared_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("world") / "telegram.sqlite3"


@pytest.fixture(scope="module")
def other(shared_path: Path) -> Iterator[WorldProcess]:
    """The other process (its own SandboxWorld on the same file), for the whole module: starting one costs a
    Python and Telethon import."""
    SandboxWorld(shared_path).close()  # the file exists before either side writes
    process = WorldProcess(shared_path)
    yield process
    process.close()


@pytest.fixture
def here(shared_path: Path, other: WorldProcess) -> Iterator[SandboxWorld]:
    """This process's world on the file, installed for the clients the test creates."""
    world = SandboxWorld(shared_path)
    install(world)
    yield world
    uninstall()
    world.close()


async def test_a_message_written_by_another_process_is_pushed_to_the_live_client(here, other, make_client):
    account, alice = new_phone(), new_phone()
    client = make_client()
    await log_in(client, account)
    alice_id = other.call("create_user", alice, username=f"alice{alice[-4:]}")  # a user made there exists here
    await client.get_input_entity(f"@alice{alice[-4:]}")
    received = collect_incoming(client)
    differences_before = here.request_counts["GetDifferenceRequest"]

    message_id = other.call("incoming", account, alice, "hi from the other process")
    await wait_for(lambda: len(received) == 1)

    assert (received[0].id, received[0].sender_id, received[0].raw_text) == (
        message_id, alice_id, "hi from the other process")
    assert here.request_counts["GetDifferenceRequest"] == differences_before  # pushed, not caught up


async def test_a_message_from_a_sender_unknown_to_the_account_carries_the_user(here, other, make_client):
    account, bob = new_phone(), new_phone()
    client = make_client()
    await log_in(client, account)
    other.call("create_user", bob, username=f"bob{bob[-4:]}", first_name="Bob")
    received = collect_incoming(client)

    other.call("incoming", account, bob, "hi, we never talked")
    await wait_for(lambda: len(received) == 1)

    assert received[0].sender is not None and received[0].sender.first_name == "Bob"


async def test_writes_of_both_processes_reach_the_client_each_once_in_pts_order(here, other, make_client):
    account, alice = new_phone(), new_phone()
    client = make_client()
    await log_in(client, account)
    other.call("create_user", alice)
    received = collect_incoming(client)

    for n in range(15):
        other.call("incoming", account, alice, f"there {n}")
        here.incoming(account, alice, f"here {n}")
    await wait_for(lambda: len(received) == 30, timeout=10)
    for n in range(15, 20):  # then from there only: no later push here reveals them as a gap
        other.call("incoming", account, alice, f"there {n}")
    await wait_for(lambda: len(received) == 35, timeout=10)
    await asyncio.sleep(0.2)  # a second push of any of them would arrive by now

    ids = [event.id for event in received]
    assert len(ids) == 35 and ids == sorted(ids) and len(set(ids)) == 35
    assert sorted(event.raw_text for event in received) == sorted(
        [f"there {n}" for n in range(20)] + [f"here {n}" for n in range(15)])


async def test_this_process_s_own_writes_do_not_wake_the_watcher_and_another_s_do(here, other, make_client):
    """The watcher reads the file only after another connection than this process's world committed: local writes
    are pushed by their writer, and reading them back found nothing of another origin."""
    from crm_server.sandbox.live import POLL_SECONDS, sessions_for

    account, alice = new_phone(), new_phone()
    client = make_client()
    await log_in(client, account)
    other.call("create_user", alice)
    received = collect_incoming(client)
    live = sessions_for(here.path)
    await asyncio.sleep(POLL_SECONDS * 5)  # what the login and the user's creation there woke is read by now
    polls = live.polls

    for n in range(20):
        here.incoming(account, alice, f"local {n}")
        await asyncio.sleep(POLL_SECONDS)
    await wait_for(lambda: len(received) == 20)
    assert live.polls == polls

    other.call("incoming", account, alice, "from there")
    await wait_for(lambda: len(received) == 21)
    assert live.polls > polls


async def test_an_edit_made_through_another_process_is_pushed(here, other, make_client):
    account, alice = new_phone(), new_phone()
    client = make_client()
    await log_in(client, account)
    other.call("create_user", alice)
    received = collect_incoming(client)
    edits: list[events.MessageEdited.Event] = []

    async def on_edit(event: events.MessageEdited.Event) -> None:
        edits.append(event)

    client.add_event_handler(on_edit, events.MessageEdited())
    message_id = other.call("incoming", account, alice, "tpyo")
    await wait_for(lambda: len(received) == 1)

    other.call("edit", account, alice, message_id, "typo")
    await wait_for(lambda: len(edits) == 1)

    assert (edits[0].id, edits[0].raw_text) == (message_id, "typo")


async def test_a_session_terminated_in_another_process_is_disconnected_here(here, other, make_client):
    account = new_phone()
    client = make_client()
    await log_in(client, account)

    other.call("revoke", account)

    with pytest.raises(errors.AuthKeyUnregisteredError):
        await asyncio.wait_for(client.disconnected, timeout=3)


async def test_a_code_hash_issued_here_signs_in_there_and_the_auth_key_works_back_here(here, other, make_client):
    account = new_phone()
    client = make_client()
    await client.connect()
    sent = await client.send_code_request(account)
    session = client.session.save()
    await client.disconnect()

    signed = other.call("sign_in", session, account, LOGIN_CODE, phone_code_hash=sent.phone_code_hash)

    assert signed["user_id"] == here.user_id_of(account)
    back = make_client(StringSession(signed["session"]))  # the session (auth key) moved back to this process
    await back.connect()
    me = await back.get_me()
    assert me is not None and me.id == signed["user_id"]


async def test_a_2fa_challenge_issued_here_is_answered_there(here, other, make_client):
    account = new_phone()
    other.call("create_account", account, password="correct horse")
    client = make_client()
    await client.connect()
    await client.send_code_request(account)
    with pytest.raises(errors.SessionPasswordNeededError):
        await client.sign_in(account, LOGIN_CODE)
    challenge = await client(functions.account.GetPasswordRequest())  # srp_id issued by this process
    check = compute_check(challenge, "correct horse")
    session = client.session.save()
    await client.disconnect()

    answered = other.call("check_password", session, bytes(check).hex())

    assert answered["user_id"] == here.user_id_of(account)
    with pytest.raises(RuntimeError, match="SrpIdInvalid|SRP_ID_INVALID"):  # each srp_id answers once, anywhere
        other.call("check_password", session, bytes(check).hex())


async def test_a_qr_token_exported_here_is_accepted_there_and_the_client_here_learns_it(here, other, make_client):
    phone = new_phone()
    other.call("create_account", phone)  # the phone that scans: an account of the world
    desktop = make_client()
    await desktop.connect()
    qr = await desktop.qr_login()
    waiting = asyncio.ensure_future(qr.wait(timeout=10))

    assert other.call("qr_scan", qr.url, phone) == here.user_id_of(phone)

    user = await waiting  # updateLoginToken, pushed here by the watcher
    assert user.id == here.user_id_of(phone)


def open_together(path: Path, count: int) -> tuple[list[SandboxWorld], list[BaseException]]:
    """`count` worlds opened on `path` at once from threads released together (as instances start together); the
    worlds opened and what the others raised."""
    opened: list[SandboxWorld] = []
    failures: list[BaseException] = []
    start = threading.Barrier(count)

    def open_it() -> None:
        start.wait()
        try:
            opened.append(SandboxWorld(path))
        except BaseException as exc:  # reported by the caller
            failures.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return opened, failures


def test_a_world_file_from_before_shared_worlds_is_migrated_once_by_processes_opening_it_together(tmp_path):
    path = tmp_path / "old.sqlite3"
    with SandboxWorld(path) as world:
        world.incoming("+79994440999", world.create_user("+79994440998"), "written before")
    with sqlite3.connect(path) as db:  # what a world file of the previous release lacks
        for table, column in (("messages", "origin"), ("messages", "peer_known"), ("other_updates", "origin")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    opened, failures = open_together(path, 4)
    try:
        assert failures == []  # a second ALTER would fail with "duplicate column"
        world = opened[0]
        world.incoming("+79994440999", "+79994440998", "written after")
        messages, _, _ = world.difference(world.user_id_of("+79994440999"), 0, 10)
        assert [m.text for m in messages] == ["written before", "written after"]
    finally:
        for world in opened:
            world.close()


def test_processes_creating_one_new_world_file_together_all_open_it(tmp_path):
    """`tgcrm cluster` starts k instances on a world file none has made yet: switching it to WAL must not fail
    with "database is locked" in the ones that lose the race."""
    for attempt in range(12):
        opened, failures = open_together(tmp_path / f"new-{attempt}.sqlite3", 6)
        try:
            assert failures == []
            assert len({world.pts(0) for world in opened}) == 1
        finally:
            for world in opened:
                world.close()
