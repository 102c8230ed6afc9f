"""A QR login's code as an SVG image, drawn here by segno (a well-kept pure-Python library): no external service ever
sees the login token, and the admin page shows the image as it is.
"""

from __future__ import annotations

import io

import segno

# Telegram's apps read a QR code with a quiet zone of a few modules; medium error correction survives a glare.
_BORDER_MODULES = 3
_SCALE = 6


def qr_svg(url: str) -> str:
    """`url` (a `tg://login?token=…`) as a standalone SVG document (no XML declaration, no scripts)."""
    code = segno.make(url, error="m", micro=False)
    out = io.BytesIO()
    code.save(out, kind="svg", scale=_SCALE, border=_BORDER_MODULES, xmldecl=False, svgclass="qr-login",
              title="Telegram login QR code", dark="#000", light="#fff")
    return out.getvalue().decode("ascii")
