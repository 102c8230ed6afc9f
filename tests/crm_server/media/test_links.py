"""MediaLinks: a link opens its one file until it expires; a forged, altered or expired link opens nothing."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from crm_server.media.links import MediaLinks, link_key

KEY = link_key(b"a-session-key-of-the-server")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path.rsplit("/", 1)[1], query["expires"][0], query["signature"][0]


def test_a_fresh_link_is_valid_and_names_its_base_and_expiry() -> None:
    clock = Clock(1_000_000.0)
    links = MediaLinks(KEY, "https://crm.example.com/", 3600, clock=clock)
    link = links.link("abc")
    assert link.url.startswith("https://crm.example.com/media/abc?expires=1003600&signature=")
    assert link.expires_at == 1_003_600.0
    assert links.valid(*parts(link.url))


def test_an_expired_link_is_refused() -> None:
    clock = Clock(1_000_000.0)
    links = MediaLinks(KEY, "http://127.0.0.1:8090", 60, clock=clock)
    link = links.link("abc")
    clock.now += 61
    assert not links.valid(*parts(link.url))


def test_a_link_with_another_id_expiry_or_key_is_refused() -> None:
    links = MediaLinks(KEY, "http://127.0.0.1:8090", 60)
    media_id, expires, signature = parts(links.link("abc").url)
    assert not links.valid("abd", expires, signature)
    assert not links.valid(media_id, str(int(expires) + 3600), signature)  # a longer life is not for the taking
    assert not links.valid(media_id, expires, "0" * 64)
    assert not links.valid(media_id, expires, "")
    assert not links.valid(media_id, "soon", signature)
    other = MediaLinks(link_key(b"another-server"), "http://127.0.0.1:8090", 60)
    assert not other.valid(media_id, expires, signature)
