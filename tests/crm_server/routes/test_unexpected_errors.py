"""An unexpected exception in a crm_server route is the contract's JSON 500, logged once by its type, and not raised
on to the server (which would log it a second time, message and traceback included)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from crm_server.app import create_app
from crm_server.settings import ServerSettings

SECRET_IN_THE_MESSAGE = "a text the request carried 7c1e"


async def test_an_unexpected_error_is_a_json_500_logged_once_by_type(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(ServerSettings(state_dir=tmp_path, sandbox=True))

    async def broken(request: object) -> None:
        raise RuntimeError(SECRET_IN_THE_MESSAGE)

    app.router.add_route("/broken", broken, methods=["GET"])
    # ASGITransport raises what the app raises on to its server: an answered error must not reach it.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://crm") as client:
        with caplog.at_level(logging.DEBUG):
            response = await client.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"success": False, "error": "Internal server error", "code": "INTERNAL_ERROR"}
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.getMessage() for record in errors] == ["unhandled RuntimeError on GET /broken"]
    assert SECRET_IN_THE_MESSAGE not in caplog.text and not errors[0].exc_info
