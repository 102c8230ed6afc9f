"""Incoming files for the delivery worker of an instance that does not run the account: fetched through the holder.

Any instance's worker may post any account's events, but only the instance holding the account has its Telegram
client. `RelayedMediaSource` downloads through this instance's live clients when it can, and otherwise asks the
holder (`POST /cluster/media`, signed like every forward) to download the file and stream it back; the file is then
kept on this instance's disk like any other. The route is the holder's side: signed requests only, one hop.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from crm_server import errors
from crm_server.cluster.forwarding import Forwarder
from crm_server.media.files import CountingFile, discard
from crm_server.routes.models import MediaRelayRequest
from crm_server.routes.parsing import parse_body
from crm_server.webhooks.media_source import MediaRef, MediaSource, MediaTransient, MediaUnavailable

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


async def relay_media(request: Request) -> Response:
    """The holder downloads the file through its live client and streams it to the instance that asked."""
    state = request.app.state.crm
    body = await parse_body(request, MediaRelayRequest)
    # Only another instance may ask (no API key here: the cluster signature is the whole authorization).
    if not state.forwarder.check_forwarded(request):
        raise errors.ClusterSignatureInvalidError()
    if not state.manager.runs_here(body.project_id, body.phone):
        raise errors.AccountDisconnectedError("This crm_server instance does not run this account")
    ref = MediaRef(event_id=body.event_id, project_id=body.project_id, phone=body.phone, chat_id=body.chat_id,
                   message_id=body.message_id)
    path = state.media_files.new_path(".relay")
    target = CountingFile(path, state.settings.media_max_bytes)
    try:
        # The local source only: a relayed request is never relayed again.
        await state.media_source.local.download(ref, target)
    except MediaUnavailable:
        discard(path)
        raise errors.MediaNotFoundError() from None
    except MediaTransient:
        discard(path)
        raise errors.AccountDisconnectedError() from None
    except BaseException:
        discard(path)
        raise
    finally:
        target.close()
    return FileResponse(path, media_type="application/octet-stream", background=BackgroundTask(discard, path))
