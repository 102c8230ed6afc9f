"""Who is calling: the `X-API-Key` header's principal (crm_server.keys.KeyAuthenticator), then what it may touch.
"""

from __future__ import annotations

from starlette.requests import Request

from crm_server.errors import ProjectForbiddenError
from crm_server.keys import ApiPrincipal


async def authenticate(request: Request) -> ApiPrincipal:
    return await request.app.state.crm.authenticator.principal(  # type: ignore[no-any-return]
        request.headers.get("x-api-key", ""))


def require_project(principal: ApiPrincipal, project_id: str) -> None:
    if not principal.may_access(project_id):
        raise ProjectForbiddenError()


def require_admin(principal: ApiPrincipal) -> None:
    if not principal.is_admin:
        raise ProjectForbiddenError("This route needs an admin API key")
