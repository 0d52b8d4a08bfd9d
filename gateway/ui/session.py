"""The console's sign-in: an API key entered once per browser session.

The key itself is the session: it is kept in an HttpOnly, SameSite=Strict cookie scoped to
``/ui`` (Secure over https) and checked on every page with the same tenant registry the REST
API uses, so a rotated or removed key ends its sessions at once and any gateway replica can
serve any page, with no session store. Scripts cannot read it (HttpOnly), other sites cannot
send it (SameSite=Strict), and it never reaches ``/v1`` (Path=/ui). A gateway without keys
(``TAXOFORGE_AUTH=none``) has one tenant and needs no sign-in.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile

from gateway.deps import ApiError, Auth
from gateway.tenants import Tenant

__all__ = [
    "COOKIE",
    "CrossSiteRequest",
    "LoginRequired",
    "UiTenant",
    "clear_session",
    "login_target",
    "read_form",
    "start_session",
    "ui_tenant",
]

COOKIE = "taxoforge_console"
COOKIE_PATH = "/ui"
# Longer than any key a tenants file holds; a longer cookie is not a key.
_MAX_KEY = 512


class LoginRequired(Exception):
    """No valid key in this browser session: the console answers 303 to /ui/login."""

    def __init__(self, next_path: str) -> None:
        super().__init__("sign in with an API key")
        self.next_path = next_path


class CrossSiteRequest(Exception):
    """A state-changing console request that another site's page sent (answered 403)."""


def login_target(next_path: str | None) -> str:
    """Where to go after signing in: a console path only, never another site."""
    if not next_path:
        return "/ui/jobs"
    parts = urlsplit(next_path)
    if parts.scheme or parts.netloc or not parts.path.startswith("/ui/") or "\\" in next_path:
        return "/ui/jobs"
    return next_path


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/ui/login?next=" + quote(target, safe="/")


def _same_site(request: Request) -> bool:
    """Whether a POST comes from the console's own pages (no cross-site form posts: with
    TAXOFORGE_AUTH=none there is no cookie for SameSite to withhold)."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return True
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return origin != "null"


def ui_tenant(request: Request) -> Tenant:
    """The tenant of this browser session.

    Raises:
        LoginRequired: no key, or one the registry does not know (the app answers 303).
        CrossSiteRequest: a POST from another site's page (403).
        ApiError: 429 over the tenant's rate limit, as on the REST API.
    """
    if not _same_site(request):
        raise CrossSiteRequest("cross-site requests to the console are refused")
    auth: Auth = request.app.state.auth
    key = request.cookies.get(COOKIE) or None
    if key is not None and len(key) > _MAX_KEY:
        key = None
    try:
        return auth.tenant(key)
    except ApiError as exc:
        if exc.status == 401:
            raise LoginRequired(login_url(request)) from exc
        raise


UiTenant = Annotated[Tenant, Depends(ui_tenant)]


def start_session(response: Response, request: Request, key: str) -> None:
    """Keep ``key`` in this browser session's cookie (no Max-Age: gone with the browser)."""
    response.set_cookie(
        COOKIE,
        key,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def read_form(request: Request) -> FormData:
    """An ``application/x-www-form-urlencoded`` body (the console's forms), parsed without
    python-multipart; the gateway's body limit applies as to any request."""
    body = await request.body()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    fields: list[tuple[str, str | UploadFile]] = list(
        parse_qsl(text, keep_blank_values=True, max_num_fields=10_000)
    )
    return FormData(fields)
