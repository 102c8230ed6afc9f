"""The admin page's server side: the static page (plain HTML, CSS and JavaScript, nothing fetched from elsewhere),
its configuration, and in local mode only an endpoint that signs the page in as the demo user (loopback only; the
page's usual sign-in is email + password through /auth/v1).

Everything the page does after that goes through /rest/v1 (RLS applies) and /functions/v1 with the user's JWT.
All of it answers only requests addressed to its own loopback name and port (`host_guard`: DNS rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import jwt
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tgcrm.admin.host_guard import HostGuard, HostGuardMiddleware

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page loads only its own files and talks only to its own origin: it works offline and injected markup
# could not pull anything in.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class LocalSignIn:
    """Local mode: the demo user the page may sign in as, and the local crm_server to prefill the connect form."""

    user_id: str
    email: str | None
    jwt_secret: str
    crm_url: str | None = None
    crm_api_key: str | None = None


@dataclass(frozen=True)
class AdminSettings:
    anon_key: str
    host_guard: HostGuard  # the names and port the page answers to
    local_sign_in: LocalSignIn | None = None  # None in production: no password-less sign-in exists
    sandbox: bool = False


def _is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_admin_app(settings: AdminSettings) -> Starlette:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=SECURITY_HEADERS)

    async def config(request: Request) -> JSONResponse:
        local = settings.local_sign_in
        # The demo user's email prefills the sign-in form locally (its password is printed by `tgcrm up`).
        return JSONResponse({"anonKey": settings.anon_key, "supabaseUrl": "",
                             "localSignIn": local is not None, "sandbox": settings.sandbox,
                             "demoEmail": local.email if local is not None else None},
                            headers={"Cache-Control": "no-store"})

    async def local_session(request: Request) -> JSONResponse:
        from supabase_local.keys import user_token

        local = settings.local_sign_in
        # Also refused from other machines when the stack listens beyond loopback (--host 0.0.0.0).
        if local is None or not _is_loopback(request):
            return JSONResponse({"success": False, "error": "Local sign-in is not available here",
                                 "code": "NOT_FOUND"}, status_code=404)
        token = user_token(local.user_id, local.jwt_secret, email=local.email)
        return JSONResponse({"success": True, "accessToken": token, "userId": local.user_id, "email": local.email,
                             "crmDefaults": {"crmApiUrl": local.crm_url, "crmApiKey": local.crm_api_key}},
                            headers={"Cache-Control": "no-store"})

    async def local_crm_defaults(request: Request) -> JSONResponse:
        """The local crm_server and the demo organization's key, for the demo user however they signed in (the
        one-click sign-in hands them over with its session; a password sign-in asks here with its token)."""
        local = settings.local_sign_in
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if local is None or not _is_loopback(request) or scheme.lower() != "bearer":
            return JSONResponse({"success": False, "error": "Not available here", "code": "NOT_FOUND"},
                                status_code=404)
        try:
            claims = jwt.decode(token.strip(), local.jwt_secret, algorithms=["HS256"], audience="authenticated")
        except jwt.PyJWTError:
            return JSONResponse({"success": False, "error": "Invalid token", "code": "UNAUTHORIZED"},
                                status_code=401)
        # Only the demo user: the key belongs to the demo organization.
        if not hmac.compare_digest(str(claims.get("sub", "")), local.user_id):
            return JSONResponse({"success": False, "error": "Not available for this user", "code": "NOT_FOUND"},
                                status_code=404)
        return JSONResponse({"success": True,
                             "crmDefaults": {"crmApiUrl": local.crm_url, "crmApiKey": local.crm_api_key}},
                            headers={"Cache-Control": "no-store"})

    return Starlette(routes=[
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/config.json", config, methods=["GET"]),
        Route("/local/session", local_session, methods=["POST"]),
        Route("/local/crm-defaults", local_crm_defaults, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ], middleware=[Middleware(HostGuardMiddleware, guard=settings.host_guard)])
