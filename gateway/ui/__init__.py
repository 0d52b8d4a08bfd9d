"""The web console under ``/ui``: server-rendered pages over the gateway's own backend.

Pages resolve their tenant with ``session.UiTenant`` and read through the same ``Backend``
calls the REST routes use, so a job, record or taxonomy of another tenant is a 404 here
exactly as on ``/v1``. ``install`` (called by ``create_app``) makes the gateway's errors HTML
pages on console paths and sends a browser without a session to the login page.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.deps import ApiError, Auth
from gateway.ui import jobs, new_job, records, taxonomies
from gateway.ui.render import STATIC_DIR, render
from gateway.ui.session import (
    CrossSiteRequest,
    LoginRequired,
    clear_session,
    login_target,
    read_form,
    start_session,
)
from taxoforge.errors import ConflictError, NotFoundError, PermanentError, TransientError

__all__ = ["install", "router"]

router = APIRouter(prefix="/ui", include_in_schema=False)

_STATIC_NAME = re.compile(r"[a-z0-9_-]{1,64}\.(js|css|svg)")
_STATIC_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}


@router.get("")
@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """The console's own scripts and styles (committed to the repository, never fetched)."""
    match = _STATIC_NAME.fullmatch(name)
    path = STATIC_DIR / name
    if match is None or not path.is_file():
        raise NotFoundError(f"no static file {name!r}")
    return FileResponse(
        path,
        media_type=_STATIC_TYPES[match.group(1)],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def _auth_off(request: Request) -> bool:
    settings = getattr(request.app.state, "settings", None)
    return getattr(settings, "auth", "keys") == "none"


@router.get("/login")
async def login_page(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    if _auth_off(request):
        return RedirectResponse(login_target(next), status_code=303)
    return render(request, "login.html", next=login_target(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key with the tenant registry; keep it in the session cookie when valid."""
    form = await read_form(request)
    target = login_target(str(form.get("next") or ""))
    if _auth_off(request):
        return RedirectResponse(target, status_code=303)
    key = str(form.get("api_key") or "").strip()
    auth: Auth = request.app.state.auth
    try:
        auth.tenant(key or None)
    except ApiError as exc:
        error = "That key is not valid." if exc.status == 401 else str(exc)
        return render(request, "login.html", status=exc.status, next=target, error=error)
    response = RedirectResponse(target, status_code=303)
    start_session(response, request, key)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    clear_session(response, request)
    return response


# The new-job form first: its /ui/jobs/new would otherwise be taken for a job id.
router.include_router(new_job.router)
router.include_router(taxonomies.router)
router.include_router(jobs.router)
router.include_router(records.router)


def _ui(request: Request) -> bool:
    return request.url.path == "/ui" or request.url.path.startswith("/ui/")


_Handler = Callable[[Request, Exception], Response | Awaitable[Response]]

_TITLES = {
    400: "Bad request",
    401: "Sign in needed",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible now",
    413: "Too large",
    422: "Invalid",
    429: "Too many requests",
    503: "Unavailable",
}


def _page_status(exc: Exception) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, PermanentError):
        return 422
    if isinstance(exc, TransientError):
        return 503
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code
    if isinstance(exc, RequestValidationError):
        return 422
    return 500


def install(app: FastAPI) -> None:
    """Mount the console and make the app's errors HTML pages on console paths (the REST API
    keeps its JSON errors): call once, after the app's own exception handlers."""
    app.include_router(router)

    async def _login(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        return RedirectResponse(exc.next_path, status_code=303)

    async def _cross_site(request: Request, exc: Exception) -> Response:
        return render(request, "error.html", status=403, title="Not allowed", message=str(exc))

    app.add_exception_handler(LoginRequired, _login)
    app.add_exception_handler(CrossSiteRequest, _cross_site)
    for kind in (
        NotFoundError,
        ConflictError,
        PermanentError,
        TransientError,
        ApiError,
        StarletteHTTPException,
        RequestValidationError,
    ):
        json_handler = app.exception_handlers.get(kind)
        if json_handler is not None:
            app.add_exception_handler(kind, _html_on_ui(json_handler))


def _html_on_ui(json_handler: _Handler) -> _Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        if not _ui(request):
            answer = json_handler(request, exc)
            return await answer if isinstance(answer, Awaitable) else answer
        status = _page_status(exc)
        if isinstance(exc, StarletteHTTPException):
            message = str(exc.detail)
        elif isinstance(exc, RequestValidationError):
            message = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', '')}"
                for e in exc.errors()[:5]
            )
        else:
            message = str(exc)
        headers = exc.headers if isinstance(exc, ApiError) else None
        response = render(
            request,
            "error.html",
            status=status,
            title=_TITLES.get(status, "Error"),
            message=message,
        )
        response.headers.update(headers or {})
        return response

    return handler
