"""The webhook's memory of integrations by key: short-lived, bounded, enabled integrations only, forgotten on change."""

from __future__ import annotations

from functions._shared.rows import IntegrationRow
from functions._shared.webhook_key_cache import WebhookKeyCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def integration(integration_id: str = "i-1", *, is_enabled: bool = True) -> IntegrationRow:
    return IntegrationRow(id=integration_id, organization_id="o-1", provider="telegram_crm", is_enabled=is_enabled,
                          settings={"secret": "s"})


def test_a_remembered_integration_is_found_until_its_ttl_passes() -> None:
    clock = FakeClock()
    cache = WebhookKeyCache(2.0, clock=clock)
    cache.remember("key", integration())
    clock.now += 1.9
    assert cache.get("key") is not None
    clock.now += 0.1
    assert cache.get("key") is None
    assert len(cache) == 0


def test_a_disabled_integration_is_not_remembered() -> None:
    cache = WebhookKeyCache(2.0)
    cache.remember("key", integration(is_enabled=False))
    assert cache.get("key") is None


def test_a_ttl_of_zero_remembers_nothing() -> None:
    cache = WebhookKeyCache(0.0)
    cache.remember("key", integration())
    assert cache.get("key") is None


def test_the_cache_keeps_at_most_max_entries_dropping_the_oldest() -> None:
    cache = WebhookKeyCache(60.0, max_entries=3)
    for index in range(10):
        cache.remember(f"key-{index}", integration(f"i-{index}"))
    assert len(cache) == 3
    assert cache.get("key-6") is None and cache.get("key-9") is not None


def test_expired_entries_are_dropped_when_another_is_remembered() -> None:
    clock = FakeClock()
    cache = WebhookKeyCache(1.0, clock=clock)
    cache.remember("old", integration("i-old"))
    clock.now += 5
    cache.remember("new", integration("i-new"))
    assert len(cache) == 1


def test_forgetting_an_integration_drops_every_key_naming_it() -> None:
    cache = WebhookKeyCache(60.0)
    cache.remember("key-a", integration("i-1"))
    cache.remember("key-b", integration("i-1"))
    cache.remember("key-c", integration("i-2"))
    cache.forget_integration("i-1")
    assert (cache.get("key-a"), cache.get("key-b")) == (None, None)
    assert cache.get("key-c") is not None
