"""How the gateway frames a read's answer without Starlette's Response (FramedResponse, `_vary_by_origin`): the
same status, headers in the same order, and body as Starlette's Response and CORSMiddleware would send."""

from __future__ import annotations

import pytest
from starlette.responses import Response

from supabase_local.rest.app import FramedResponse, _vary_by_origin
from supabase_local.rest.negotiation import JSON_MEDIA, OBJECT_MEDIA


@pytest.mark.parametrize(("content", "status", "headers", "media_type"), [
    (b'[{"id":"a"}]', 200, {"Content-Range": "0-0/*"}, JSON_MEDIA),
    (b"", 200, {"Content-Range": "*/0"}, JSON_MEDIA),  # HEAD: no body, Content-Length 0 as Starlette sends
    (b'{"id":"a"}', 206, {"Content-Range": "0-0/5", "Preference-Applied": "count=exact"}, OBJECT_MEDIA),
    (b"[]", 416, {"Content-Range": "*/3"}, JSON_MEDIA),
])
def test_a_framed_answer_is_starlettes(content: bytes, status: int, headers: dict[str, str],
                                       media_type: str) -> None:
    framed = FramedResponse(content, status, [(name.lower().encode(), value.encode())
                                              for name, value in headers.items()], media_type)
    starlette = Response(content, status_code=status, headers=headers, media_type=media_type)
    assert (framed.status_code, framed.raw_headers, framed.body) == (
        starlette.status_code, starlette.raw_headers, starlette.body)


def test_vary_origin_is_added_or_joined_to_the_first_vary() -> None:
    alone = [(b"content-type", b"application/json")]
    _vary_by_origin(alone)
    assert alone == [(b"content-type", b"application/json"), (b"vary", b"Origin")]
    several = [(b"vary", b"Accept"), (b"content-type", b"text/plain"), (b"vary", b"Prefer")]
    _vary_by_origin(several)
    assert several == [(b"vary", b"Accept, Prefer, Origin"), (b"content-type", b"text/plain")]
