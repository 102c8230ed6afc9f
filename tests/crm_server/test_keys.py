"""API keys: random, prefixed, stored as SHA-256, compared in constant time, bound to one project or all."""

from __future__ import annotations

import hashlib

from crm_server.keys import ApiPrincipal, generate_key, hash_key, key_matches


def test_keys_are_prefixed_and_unguessable() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("tgcrm_") and len(key) >= 6 + 43 for key in keys)


def test_the_stored_form_is_the_sha256_hex_of_the_key() -> None:
    key = generate_key()
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key not in hash_key(key)


def test_key_matches_only_its_own_hash() -> None:
    key, other = generate_key(), generate_key()
    assert key_matches(key, hash_key(key))
    assert not key_matches(other, hash_key(key))
    assert not key_matches(key[:-1], hash_key(key))


def test_a_project_key_reaches_only_its_project_and_an_admin_key_reaches_all() -> None:
    project_key = ApiPrincipal(key_hash="h", project_id="org-1")
    admin_key = ApiPrincipal(key_hash="h", project_id=None)
    assert project_key.may_access("org-1")
    assert not project_key.may_access("org-2")
    assert not project_key.may_access("org-1 ")
    assert not project_key.is_admin
    assert admin_key.is_admin and admin_key.may_access("org-1") and admin_key.may_access("anything")
