"""`GET /media/{id}?expires=…&signature=…`: a prepared incoming file, for whoever holds its signed link.

No API key: the link is the capability (crm_server.media.links); everything else about it is MediaServing's.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from crm_server import errors
from crm_server.app_state import AppState
from crm_server.media.serving import FileOnOtherInstance


async def media_file(request: Request) -> Response:
    state: AppState = request.app.state.crm
    try:
        served = await state.media.open(
            request.path_params["id"], request.query_params.get("expires", ""),
            request.query_params.get("signature", ""),
        )
    except FileOnOtherInstance as elsewhere:
        # Several instances: the one that downloaded the file serves it (its answer, status and headers as they are);
        # when it cannot (not forwarding, gone) and this instance reads the file too (a shared disk), from here.
        try:
            answer = await state.forwarder.to_instance(request, elsewhere.instance_id)
        except errors.HolderUnreachableError:
            if elsewhere.here is None:
                raise
            answer = None
        if answer is not None:
            return answer
        if elsewhere.here is None:
            raise errors.MediaNotFoundError() from None
        served = elsewhere.here
    # FileResponse streams the file in chunks, sets Content-Length and answers Range requests.
    return FileResponse(
        served.path,
        media_type=served.mime_type,
        filename=served.file_name,
        headers={
            "ETag": f'"{served.sha256}"',
            "X-Content-Type-Options": "nosniff",
            # Opened in a browser it is still no page of ours: no scripts, no same-origin access.
            "Content-Security-Policy": "sandbox",
            "Cache-Control": "private, no-store",
        },
    )
