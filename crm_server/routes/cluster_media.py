"""`POST /cluster/media`: the holder's side of an incoming file relayed to another instance's delivery worker.

Signed requests from another instance only (the cluster signature is the whole authorization, no API key); the holder
downloads through its live client and streams the file back; never relayed again (crm_server.cluster.media_relay).
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from crm_server import errors
from crm_server.media.files import CountingFile, discard
from crm_server.routes.models import MediaRelayRequest
from crm_server.routes.parsing import parse_body
from crm_server.webhooks.media_source import MediaRef, MediaTransient, MediaUnavailable


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
