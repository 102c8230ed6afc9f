"""Incoming files for the delivery worker of an instance that does not run the account: fetched through the holder.

Any instance's worker may post any account's events, but only the instance holding the account has its Telegram
client. `RelayedMediaSource` downloads through this instance's live clients when it can, and otherwise asks the
holder (`POST /cluster/media`, signed like every forward) to download the file and stream it back; the file is then
kept on this instance's disk like any other. The holder's side is the route in crm_server/routes/cluster_media.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from crm_server.cluster.forwarding import Forwarder
from crm_server.media.files import CountingFile
from crm_server.webhooks.media_source import MediaRef, MediaSource, MediaTransient

RELAY_PATH = "/cluster/media"


class RelayedMediaSource:
    """A MediaSource: the local one, else the account's holder over the cluster."""

    def __init__(self, local: MediaSource) -> None:
        self.local = local
        self._forwarder: Forwarder | None = None
        self._runs_here: Callable[[str, str], bool] = lambda project_id, phone: True

    def relay_through(self, forwarder: Forwarder, runs_here: Callable[[str, str], bool]) -> None:
        """Wired after the manager exists (it is built after the delivery worker that asks us)."""
        self._forwarder = forwarder
        self._runs_here = runs_here

    async def download(self, ref: MediaRef, into: CountingFile) -> None:
        try:
            await self.local.download(ref, into)
        except MediaTransient:
            forwarder = self._forwarder
            if forwarder is None or not forwarder.enabled or self._runs_here(ref.project_id, ref.phone):
                raise  # ours, and not connected right now: the lane retries
            into.restart()
            await forwarder.fetch_media(RELAY_PATH, _wire(ref), into)


def _wire(ref: MediaRef) -> bytes:
    return json.dumps({"event_id": ref.event_id, "project_id": ref.project_id, "phone": ref.phone,
                       "chat_id": ref.chat_id, "message_id": ref.message_id}).encode()
