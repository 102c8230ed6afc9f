"""`GET /media/{id}?expires=…&signature=…`: a prepared incoming file, for whoever holds its signed link.

No API key: the link is the capability (crm_server.media.links); everything else about it is MediaServing's.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from crm_server.app_state import AppState


async def media_file(request: Request) -> Response:
    state: AppState = request.app.state.crm
    served = await state.media.open(
        request.path_params["id"], request.query_params.get("expires", ""), request.query_params.get("signature", ""),
    )
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
