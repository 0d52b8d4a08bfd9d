"""The FastAPI application, its lifespan and its error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.backend import Backend
from gateway.deps import ApiError, Auth
from gateway.limits import AccessLog, BodyLimit, InvalidTextBody, ValidText
from gateway.routes import health, jobs, judge, models, selection, taxonomies
from gateway.schemas import OPERATOR_SETTING
from gateway.settings import GatewaySettings
from gateway.tenants import TenantRegistry, TenantsFileError
from gateway.ui import install as install_console
from taxoforge import __version__
from taxoforge.bus import Bus
from taxoforge.errors import ConflictError, NotFoundError, PermanentError, TransientError
from taxoforge.llm.endpoints import ModelChoiceError, ModelRegistry, ModelsFileError
from taxoforge.logging import configure_logging, secret_values

__all__ = ["create_app", "main"]

log = structlog.get_logger(__name__)


def _error(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, object] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def _auth(settings: GatewaySettings) -> Auth:
    """The gateway's key check, as the settings ask; a misconfiguration stops the start."""
    if settings.auth == "none":
        log.warning("auth_off", why="TAXOFORGE_AUTH=none: one tenant, no keys")
        return Auth(None)
    if not settings.tenants_file:
        raise TenantsFileError(
            "TAXOFORGE_AUTH=keys needs TAXOFORGE_TENANTS_FILE (make keys with `taxoforge keys "
            "new --tenant NAME`), or TAXOFORGE_AUTH=none for a gateway only you can reach"
        )
    return Auth(TenantRegistry(Path(settings.tenants_file)))


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "body"


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = []
    for err in exc.errors():
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling (see /docs for the schema)"
        elif err.get("type") == "missing":
            msg = "this field is required"
        elif err.get("type") == OPERATOR_SETTING:
            registry: ModelRegistry = request.app.state.models
            msg += f" (models you may name: {', '.join(registry.names())})"
        details.append({"field": _field(tuple(err.get("loc", ()))), "message": msg})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return _error(422, "invalid_request", f"the request is invalid: {summary}", details)


def create_app(settings: GatewaySettings, bus: Bus | None = None) -> FastAPI:
    """Build the app; connects to NATS in its lifespan unless a connected ``bus`` is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_bus = bus is None
        the_bus = bus or await Bus.connect(settings.bus, name="taxoforge-gateway")
        await the_bus.ensure_topology()
        backend = Backend(settings, the_bus)
        app.state.backend = backend
        app.state.settings = settings
        log.info("gateway_ready", port=settings.http_port)
        try:
            yield
        finally:
            await backend.close()
            if own_bus:
                await the_bus.close()

    auth = _auth(settings)
    # Names only: the gateway checks what a request names and never calls a model, so it
    # reads no model key.
    registry = ModelRegistry.from_settings(settings.llm, with_keys=False)

    app = FastAPI(
        title="taxoforge",
        version=__version__,
        summary="Taxonomy-driven generation and selection of SFT and preference data.",
        lifespan=lifespan,
    )
    app.state.auth = auth
    app.state.models = registry
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(taxonomies.router)
    app.include_router(taxonomies.induce_router)
    app.include_router(judge.router)
    app.include_router(selection.router)
    app.include_router(models.router)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.code, str(exc), headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(InvalidTextBody)
    async def _invalid_text(request: Request, exc: InvalidTextBody) -> Response:
        details = [{"field": exc.field, "message": exc.problem}]
        return _error(422, "invalid_request", str(exc.detail), details)

    @app.exception_handler(UnicodeEncodeError)
    async def _bad_text(request: Request, exc: UnicodeEncodeError) -> Response:
        # ValidText refuses such bodies; this is for text that came in any other way.
        return _error(422, "invalid_request", "the request holds text that is not valid Unicode")

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> Response:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> Response:
        return _error(409, "conflict", str(exc))

    @app.exception_handler(ModelChoiceError)
    async def _model_choice(request: Request, exc: ModelChoiceError) -> Response:
        field = exc.field or "model"
        return _error(
            422,
            "invalid_request",
            f"the request is invalid: {field}: {exc}",
            [{"field": field, "message": str(exc)}],
        )

    @app.exception_handler(PermanentError)
    async def _invalid(request: Request, exc: PermanentError) -> Response:
        return _error(422, "invalid_request", str(exc))

    @app.exception_handler(TransientError)
    async def _unavailable(request: Request, exc: TransientError) -> Response:
        return _error(503, "unavailable", f"{exc}; try again shortly")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        log.error("unhandled_error", path=request.url.path, error=repr(exc), exc_info=exc)
        return _error(500, "internal", "internal error; the gateway log has the details")

    # The web console under /ui: after the handlers above, which it wraps to answer its pages'
    # errors as HTML.
    install_console(app)

    # The last added is the outermost: the access log sees every answer, a body over its limit
    # is refused before anything reads it, and text checks see only bodies within it. Plain
    # ASGI middleware, so an error raised while the body is read reaches FastAPI as it was
    # raised.
    app.add_middleware(ValidText)
    app.add_middleware(
        BodyLimit, default_bytes=settings.max_body_bytes, upload_bytes=settings.max_upload_bytes
    )
    if settings.cors_origins:  # off unless asked: no browser origin may call the API
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location", "X-Records", "X-Content-SHA256", "Retry-After"],
        )
    app.add_middleware(AccessLog)
    return app


def main() -> None:
    """``python -m gateway``."""
    settings = GatewaySettings()
    configure_logging(
        settings.log_level, settings.log_format, service="gateway", secrets=secret_values(settings)
    )
    try:
        app = create_app(settings)
    except (TenantsFileError, ModelsFileError) as exc:
        log.error("gateway_not_started", error=str(exc))
        raise SystemExit(2) from exc
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        loop=settings.event_loop,
        timeout_graceful_shutdown=10,
    )
