"""The world on its own: users, accounts, per-viewer access hashes, write-through persistence, SRP math."""

from __future__ import annotations

from pathlib import Path

import pytest
from telethon import password as telethon_password
from telethon.tl import types

from crm_server.sandbox import SandboxError, SandboxWorld, UnknownAccount, UsernameTaken
from crm_server.sandbox import srp


def test_create_user_is_idempotent_by_phone_and_updates_given_fields():
    with SandboxWorld() as world:
        first = world.create_user("+7 999 000-00-01")
        again = world.create_user("79990000001", username="alice", first_name="Alice")

        assert first == again
        assert world.user_id_of("@alice") == world.user_id_of("+79990000001") == world.user_id_of(first) == first
        assert world.user(first).first_name == "Alice"
        assert world.user(first).phone == "79990000001"


def test_username_belongs_to_one_user():
    with SandboxWorld() as world:
        world.create_user("+79990000001", username="alice")
        with pytest.raises(UsernameTaken):
            world.create_user("+79990000002", username="Alice")  # usernames are case-insensitive


def test_invalid_phone_is_rejected():
    with SandboxWorld() as world, pytest.raises(SandboxError):
        world.create_user("+12")


def test_control_methods_require_an_account():
    with SandboxWorld() as world:
        world.create_user("+79990000001")  # a user, not an account
        for call in (
            lambda: world.sent("+79990000001"),
            lambda: world.flood("+79990000001", 5),
            lambda: world.revoke("+79990000001"),
        ):
            with pytest.raises(UnknownAccount):
                call()


def test_access_hashes_are_per_viewer():
    with SandboxWorld() as world:
        a, b, c = (world.create_user(f"+7999000000{n}") for n in range(3))

        assert world.access_hash(a, c) != world.access_hash(b, c)
        assert world.access_hash(a, c) == world.access_hash(a, c)


def test_each_side_has_its_own_message_ids_and_pts():
    with SandboxWorld() as world:
        one = world.create_account("+79990000001")
        two = world.create_account("+79990000002")
        world.create_user("+79990000003", username="alice")
        world.incoming("+79990000001", "@alice", "moves only account one")

        sent, received = world.deliver(two, one, "between accounts")

        assert (sent.account_id, sent.id, sent.pts, sent.out) == (two, 1, 2, True)
        assert (received.account_id, received.id, received.pts, received.out) == (one, 2, 3, False)
        assert (world.pts(one), world.pts(two)) == (3, 2)


def test_state_is_written_through_to_the_file(tmp_path: Path):
    path = tmp_path / "world.sqlite3"
    with SandboxWorld(path) as world:
        account = world.create_account("+79990000001")
        alice = world.create_user("+79990000002", username="alice")
        hash_before = world.access_hash(account, alice)
        world.incoming("+79990000001", "@alice", "persisted")
        world.flood("+79990000001", 9)

    with SandboxWorld(path) as reopened:
        assert reopened.user_id_of("@alice") == alice
        assert reopened.access_hash(account, alice) == hash_before  # the secret is persisted too
        assert reopened.pts(account) == 2
        assert reopened.difference(account, 1, 10)[0][0].text == "persisted"
        assert reopened.take_flood(account) == 9


def test_two_worlds_on_one_file_see_each_others_writes(tmp_path: Path):
    path = tmp_path / "world.sqlite3"
    with SandboxWorld(path) as server, SandboxWorld(path) as injector:
        server.create_account("+79990000001")
        injector.create_user("+79990000002", username="alice")
        injector.incoming("+79990000001", "@alice", "from the other process")

        messages, _, pts = server.difference(server.user_id_of("+79990000001"), 1, 10)
        assert [m.text for m in messages] == ["from the other process"] and pts == 2


def test_srp_check_accepts_the_right_password_only():
    verifier = srp.make_verifier("s3cret")
    assert b"s3cret" not in verifier.verifier + verifier.salt1 + verifier.salt2

    def answer(password: str) -> tuple[srp.Challenge, types.InputCheckPasswordSRP]:
        challenge = srp.new_challenge(verifier)
        request = types.account.Password(
            new_algo=verifier.algo(),
            new_secure_algo=types.SecurePasswordKdfAlgoPBKDF2HMACSHA512iter100000(salt=b"12345678"),
            secure_random=b"",
            has_password=True,
            current_algo=verifier.algo(),
            srp_B=challenge.srp_b,
            srp_id=1,
        )
        return challenge, telethon_password.compute_check(request, password)

    right_challenge, right = answer("s3cret")
    wrong_challenge, wrong = answer("guess")
    assert srp.check(verifier, right_challenge, right.A, right.M1) is True
    assert srp.check(verifier, wrong_challenge, wrong.A, wrong.M1) is False
