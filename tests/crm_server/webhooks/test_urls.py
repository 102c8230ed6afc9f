"""Webhook URL policy: http(s) to public addresses, unless private targets are explicitly allowed."""

from __future__ import annotations

import pytest

from crm_server.errors import ValidationError
from crm_server.webhooks.urls import validate_webhook_url


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
        await validate_webhook_url(url, allow_private=False)
    assert refused.value.field == "webhook_url"


@pytest.mark.parametrize("url", ["ftp://93.184.216.34/x", "file:///etc/passwd", "gopher://1.1.1.1/", "https://", "http://:80/x"])
async def test_only_http_and_https_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(ValidationError):
        await validate_webhook_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["https://93.184.216.34/hook", "http://8.8.8.8:8080/x?key=1", "https://[2606:4700::1111]/h"])
async def test_public_addresses_are_accepted(url: str) -> None:
    assert await validate_webhook_url(url, allow_private=False) == url


async def test_allowing_private_webhooks_accepts_the_local_stack() -> None:
    url = "http://127.0.0.1:54321/functions/v1/telegram-crm-webhook?key=abc"
    assert await validate_webhook_url(url, allow_private=True) == url
