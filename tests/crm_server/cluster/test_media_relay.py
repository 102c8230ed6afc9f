"""`RelayedMediaSource`: this instance's client first; the holder only for an account another instance runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from crm_server.cluster.media_relay import RELAY_PATH, RelayedMediaSource
from crm_server.media.files import CountingFile
from crm_server.webhooks.media_source import MediaRef, MediaTransient

REF = MediaRef(event_id="e1", project_id="p1", phone="+1555", chat_id=7, message_id=9)


class NotConnectedHere:
    """The Telegram wing's answer for an account without a live client in this process."""

    async def download(self, ref: MediaRef, into: CountingFile) -> None:
        into.write(b"partial")
        raise MediaTransient("the account is not connected")


class Holder:
    """What the holder streams back through the cluster (records what it was asked)."""

    enabled = True

    def __init__(self) -> None:
        self.asked: list[tuple[str, bytes]] = []

    async def fetch_media(self, path: str, body: bytes, into: CountingFile) -> None:
        self.asked.append((path, body))
        into.write(b"the file")


async def test_a_file_of_an_account_held_elsewhere_comes_through_the_holder(tmp_path: Path) -> None:
    source, holder = RelayedMediaSource(NotConnectedHere()), Holder()
    source.relay_through(holder, lambda project_id, phone: False)  # type: ignore[arg-type]
    target = CountingFile(tmp_path / "f", 1000)
    await source.download(REF, target)
    target.close()
    assert (tmp_path / "f").read_bytes() == b"the file"  # the partial local attempt was dropped
    assert holder.asked[0][0] == RELAY_PATH and b'"message_id": 9' in holder.asked[0][1]


async def test_an_account_run_here_is_never_relayed(tmp_path: Path) -> None:
    source, holder = RelayedMediaSource(NotConnectedHere()), Holder()
    source.relay_through(holder, lambda project_id, phone: True)  # type: ignore[arg-type]
    with pytest.raises(MediaTransient):
        await source.download(REF, CountingFile(tmp_path / "f", 1000))
    assert holder.asked == []
