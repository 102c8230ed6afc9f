"""The `/docs` page of a service: Swagger UI 5's own files from the `swagger-ui-py` package and one small script of
ours, all served by the service itself, so the page opens offline and loads nothing from elsewhere.

Paths are relative to the page, so the same routes work at `/docs` (crm_server) and `/functions/v1/docs`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

OWN_STATIC = Path(str(resources.files("api_docs").joinpath("static")))
# Only its files are used (not its framework handlers): the package is installed on disk, so this is a path.
SWAGGER_UI_STATIC = Path(str(resources.files("swagger_ui").joinpath("static")))
# The only files served: a fixed table, never a path from the request.
ASSETS = {
    "swagger-ui.css": (SWAGGER_UI_STATIC / "swagger-ui.css", "text/css"),
    "swagger-ui-bundle.js": (SWAGGER_UI_STATIC / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-init.js": (OWN_STATIC / "swagger-init.js", "text/javascript"),
}
# Scripts and styles from this origin only; Swagger UI sets inline styles and shows data: images (its icons).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class DocsPage:
    """`title` names the API; `spec_url` is relative to the page. With `key_header`, the description is behind that
    header's key: the page opens without it and asks for it in Swagger UI's Authorize box (scheme `key_scheme`)."""

    title: str
    spec_url: str = "openapi.json"
    key_header: str | None = None
    key_scheme: str = "ApiKey"

    def routes(self, path: str = "/docs") -> list[Route]:
        return [Route(path, self.page, methods=["GET"]),
                Route(f"{path}/assets/{{name}}", self.asset, methods=["GET"])]

    async def page(self, request: Request) -> Response:
        # The page sits at `.../docs` (no trailing slash), so `docs/assets/...` and `openapi.json` resolve beside it.
        attributes = {"data-spec-url": self.spec_url, "data-title": self.title,
                      "data-key-header": self.key_header or "", "data-key-scheme": self.key_scheme}
        data = " ".join(f'{name}="{html.escape(value)}"' for name, value in attributes.items())
        body = (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(self.title)}</title>"
            "<link rel='stylesheet' href='docs/assets/swagger-ui.css'></head>"
            f"<body><div id='swagger-ui' {data}></div>"
            "<script src='docs/assets/swagger-ui-bundle.js'></script>"
            "<script src='docs/assets/swagger-init.js'></script></body></html>"
        )
        return HTMLResponse(body, headers=PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        found = ASSETS.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        path, media_type = found
        return FileResponse(path, media_type=media_type,
                            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
