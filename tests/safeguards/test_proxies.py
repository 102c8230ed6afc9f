"""Trusted proxies: addresses and networks only, and none means the forwarded headers are ignored."""

from __future__ import annotations

import pytest

from safeguards.proxies import parse_trusted_proxies, uvicorn_proxy_options


def test_addresses_networks_and_any_are_accepted() -> None:
    assert parse_trusted_proxies(" 10.0.0.5, 10.1.0.0/16 ,::1,*") == ("10.0.0.5", "10.1.0.0/16", "::1", "*")


@pytest.mark.parametrize("entry", ["proxy.internal", "10.0.0.300", "10.0.0.0/33"])
def test_anything_else_is_refused_naming_it(entry: str) -> None:
    with pytest.raises(ValueError, match=entry.replace(".", r"\.")):
        parse_trusted_proxies(f"127.0.0.1,{entry}")


def test_no_proxy_configured_turns_the_headers_off_not_uvicorns_loopback_default() -> None:
    assert parse_trusted_proxies("") == () and parse_trusted_proxies(None) == ()
    assert uvicorn_proxy_options(()) == {"proxy_headers": False, "forwarded_allow_ips": []}
    assert uvicorn_proxy_options(("10.0.0.5",)) == {"proxy_headers": True, "forwarded_allow_ips": ["10.0.0.5"]}
