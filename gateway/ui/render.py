"""Server-rendered pages: one Jinja2 environment over ``templates/``, autoescaped.

Pages carry no inline script or style: the Content-Security-Policy sent with every page allows
only the console's own static files (``/ui/static``), so nothing is fetched from elsewhere and
an injected ``<script>`` would not run. Pass data to scripts in ``data-*`` attributes, and draw
bars with ``<progress>``/``<meter>`` rather than ``style=`` attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChainableUndefined, Environment, FileSystemLoader, select_autoescape

__all__ = ["CSP", "STATIC_DIR", "TEMPLATE_DIR", "environment", "render"]

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show one tenant's data: never kept by a shared cache.
    "Cache-Control": "no-store",
}


def _number(value: float | int | None, digits: int = 2) -> str:
    """A count with thousands separators, a float to ``digits`` places; None as a dash."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def environment() -> Environment:
    """The console's template environment (autoescape on for every template)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        # Pages show JSON records whose keys vary by job kind: a missing one renders empty.
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = _number
    env.filters["percent"] = _percent
    return env


_ENV = environment()


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered with ``context`` (plus ``request`` and ``auth_on``: whether the
    console has a login, so base.html shows "Log out")."""
    auth_on = getattr(request.app.state, "settings", None)
    body = _ENV.get_template(template).render(
        request=request,
        auth_on=getattr(auth_on, "auth", "keys") != "none",
        **context,
    )
    return HTMLResponse(body, status_code=status, headers=dict(_HEADERS))
