"""The webhook's memory of integrations by key: short-lived, bounded, enabled integrations only, forgotten on change."""

from __future__ import annotations

import asyncio

import pytest

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


# --- concurrent misses: one lookup per key, whatever the burst ----------------------------------------------------------

class CountedLookup:
    """The lookup the cache is given, counting its calls; it waits on `release` so the misses overlap for sure."""

    def __init__(self, answer: IntegrationRow | None = None, error: Exception | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self._answer = answer
        self._error = error

    async def __call__(self) -> IntegrationRow | None:
        self.calls += 1
        await self.release.wait()
        if self._error is not None:
            raise self._error
        return self._answer


async def burst(cache: WebhookKeyCache, lookup: CountedLookup, size: int) -> list[object]:
    waiters = [asyncio.ensure_future(cache.get_or_load("key", lookup)) for _ in range(size)]
    await asyncio.sleep(0)  # every waiter has missed before the lookup answers
    lookup.release.set()
    return await asyncio.gather(*waiters, return_exceptions=True)


async def test_concurrent_misses_for_one_key_share_one_lookup() -> None:
    cache = WebhookKeyCache(2.0)
    lookup = CountedLookup(integration())
    answers = await burst(cache, lookup, 10)
    assert lookup.calls == 1
    assert all(answer is answers[0] for answer in answers) and answers[0] is not None
    assert cache.get("key") is answers[0]


async def test_a_failed_lookup_fails_every_waiter_and_is_not_remembered() -> None:
    cache = WebhookKeyCache(2.0)
    failure = RuntimeError("database unreachable")
    lookup = CountedLookup(error=failure)
    answers = await burst(cache, lookup, 5)
    assert lookup.calls == 1 and answers == [failure] * 5
    retry = CountedLookup(integration())
    retry.release.set()
    assert await cache.get_or_load("key", retry) is not None
    assert retry.calls == 1  # looked up again: the failure was not kept


async def test_concurrent_misses_share_a_lookup_even_without_a_ttl() -> None:
    cache = WebhookKeyCache(0.0)
    lookup = CountedLookup(integration())
    await burst(cache, lookup, 4)
    assert lookup.calls == 1 and cache.get("key") is None


async def test_a_waiter_that_gives_up_does_not_cancel_the_lookup_of_the_others() -> None:
    cache = WebhookKeyCache(2.0)
    lookup = CountedLookup(integration())
    first = asyncio.ensure_future(cache.get_or_load("key", lookup))
    second = asyncio.ensure_future(cache.get_or_load("key", lookup))
    await asyncio.sleep(0)
    first.cancel()  # the request that started the lookup is gone (its client hung up)
    await asyncio.sleep(0)
    lookup.release.set()
    assert (await second) is not None
    with pytest.raises(asyncio.CancelledError):
        await first
    assert lookup.calls == 1


async def test_a_lookup_that_started_before_a_change_is_not_remembered() -> None:
    cache = WebhookKeyCache(60.0)
    lookup = CountedLookup(integration("i-1"))
    waiter = asyncio.ensure_future(cache.get_or_load("key", lookup))
    await asyncio.sleep(0)
    cache.forget_integration("i-1")  # this process changed the integration while the old row was on its way
    lookup.release.set()
    assert (await waiter) is not None  # the request that asked before the change gets the row it asked for
    assert cache.get("key") is None  # but the next one reads the new row
    fresh = CountedLookup(integration("i-1"))
    fresh.release.set()
    await cache.get_or_load("key", fresh)
    assert fresh.calls == 1
