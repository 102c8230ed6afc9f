"""Webhook URL policy: http(s) to public addresses, unless private targets are explicitly allowed; checked again at
delivery against the address the post then connects to."""

from __future__ import annotations

import pytest

from crm_server.errors import ValidationError
import ipaddress

from crm_server.outbound_addresses import (
    DeliveryTargets,
    WebhookAddressRefused,
    WebhookPolicy,
    validate_webhook_url,
)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:9000/hook",
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://224.0.0.1/hook",
        "http://localhost:54321/functions/v1/telegram-crm-webhook",
        "http://api.localhost/hook",
        "http://this-host-does-not-resolve.invalid/hook",
    ],
)
async def test_private_loopback_link_local_and_unresolvable_targets_are_refused(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        await validate_webhook_url(url, WebhookPolicy())
    assert refused.value.field == "webhook_url"


@pytest.mark.parametrize("url", ["ftp://93.184.216.34/x", "file:///etc/passwd", "gopher://1.1.1.1/", "https://", "http://:80/x"])
async def test_only_http_and_https_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(ValidationError):
        await validate_webhook_url(url, WebhookPolicy(allow_private=True))


@pytest.mark.parametrize("url", ["https://93.184.216.34/hook", "http://8.8.8.8:8080/x?key=1", "https://[2606:4700::1111]/h"])
async def test_public_addresses_are_accepted(url: str) -> None:
    assert await validate_webhook_url(url, WebhookPolicy()) == url


async def test_allowing_private_webhooks_accepts_the_local_stack() -> None:
    url = "http://127.0.0.1:54321/functions/v1/telegram-crm-webhook?key=abc"
    assert await validate_webhook_url(url, WebhookPolicy(allow_private=True)) == url


async def test_the_local_stack_allows_its_own_api_and_no_other_private_address() -> None:
    policy = WebhookPolicy.from_setting(False, "127.0.0.1:54321")
    own = "http://127.0.0.1:54321/functions/v1/telegram-crm-webhook?key=abc"
    assert await validate_webhook_url(own, policy) == own
    for url in ("http://127.0.0.1:5432/", "http://127.0.0.1:8090/telegram/send", "http://169.254.169.254/latest/",
                "http://10.0.0.1:54321/"):
        with pytest.raises(ValidationError):
            await validate_webhook_url(url, policy)


async def test_a_name_that_resolves_to_loopback_after_registration_is_refused_at_delivery() -> None:
    """DNS rebinding: public when registered, 127.0.0.1 by the time the worker posts."""
    answers = [[ipaddress.ip_address("93.184.215.14")], [ipaddress.ip_address("127.0.0.1")]]

    async def rebinding(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return answers.pop(0)  # type: ignore[return-value]

    url = "https://hooks.rebind.example/hook"
    first = DeliveryTargets(WebhookPolicy(), resolve=rebinding)
    assert (await first.target(url)).url == "https://93.184.215.14/hook"
    later = DeliveryTargets(WebhookPolicy(), resolve=rebinding)
    with pytest.raises(WebhookAddressRefused):
        await later.target(url)


async def test_a_post_goes_to_the_checked_address_with_the_name_kept_for_host_and_tls() -> None:
    async def public(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address("2606:4700::1111")]

    target = await DeliveryTargets(WebhookPolicy(), resolve=public).target("https://hooks.example:8443/h?key=1")
    assert target.url == "https://[2606:4700::1111]:8443/h?key=1"
    assert target.headers == {"host": "hooks.example:8443"}
    assert target.extensions == {"sni_hostname": "hooks.example"}
