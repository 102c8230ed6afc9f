"""The admin page's Host/Origin guard as a pure check: which names and origins are its own (DNS rebinding)."""

from __future__ import annotations

import pytest

from tgcrm.admin.host_guard import HostGuard, HostNotAllowedError, OriginNotAllowedError

PORT = 54321
GUARD = HostGuard.for_listen_address("127.0.0.1", PORT)


@pytest.mark.parametrize("host", [f"127.0.0.1:{PORT}", f"127.255.0.9:{PORT}", f"localhost:{PORT}",
                                  f"LOCALHOST:{PORT}", f"[::1]:{PORT}", f"[0:0:0:0:0:0:0:1]:{PORT}"])
def test_loopback_names_with_our_port_are_ours(host: str) -> None:
    GUARD.check([host], [])


@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{PORT}", f"localhost.evil.example:{PORT}",
                                  f"127.0.0.1.nip.io:{PORT}", f"10.0.0.1:{PORT}", f"0.0.0.0:{PORT}",
                                  f"127.0.0.1:{PORT + 1}", "127.0.0.1", f"::1:{PORT}", f"[::1]x:{PORT}",
                                  f"127.0.0.1:{PORT}/x", f"user@127.0.0.1:{PORT}", "127.0.0.1:", "127.0.0.1:99999x",
                                  ""])
def test_other_names_other_ports_and_malformed_hosts_are_refused(host: str) -> None:
    with pytest.raises(HostNotAllowedError):
        GUARD.check([host], [])


def test_a_missing_or_repeated_host_is_refused() -> None:
    with pytest.raises(HostNotAllowedError):
        GUARD.check([], [])
    with pytest.raises(HostNotAllowedError):
        GUARD.check([f"127.0.0.1:{PORT}", "evil.example"], [])


def test_port_80_may_be_left_out() -> None:
    guard = HostGuard.for_listen_address("127.0.0.1", 80)
    guard.check(["localhost"], ["http://localhost"])
    guard.check(["localhost:80"], ["http://localhost"])


def test_only_the_requests_own_origin_is_accepted() -> None:
    GUARD.check([f"localhost:{PORT}"], [f"http://localhost:{PORT}"])
    GUARD.check([f"[::1]:{PORT}"], [f"http://[::1]:{PORT}"])
    for origin in ("http://evil.example", f"http://evil.example:{PORT}", "null", f"https://localhost:{PORT}",
                   f"http://127.0.0.1:{PORT}", f"http://localhost:{PORT + 1}", f"http://localhost:{PORT}/", ""):
        with pytest.raises(OriginNotAllowedError):
            GUARD.check([f"localhost:{PORT}"], [origin])
    with pytest.raises(OriginNotAllowedError):
        GUARD.check([f"localhost:{PORT}"], [f"http://localhost:{PORT}", f"http://localhost:{PORT}"])


def test_an_address_named_by_host_is_ours_and_a_wildcard_adds_nothing() -> None:
    HostGuard.for_listen_address("192.168.1.5", PORT).check([f"192.168.1.5:{PORT}"], [f"http://192.168.1.5:{PORT}"])
    HostGuard.for_listen_address("fd00::5", PORT).check([f"[fd00::5]:{PORT}"], [])
    for wildcard in ("0.0.0.0", "::"):
        with pytest.raises(HostNotAllowedError):
            HostGuard.for_listen_address(wildcard, PORT).check([f"192.168.1.5:{PORT}"], [])
