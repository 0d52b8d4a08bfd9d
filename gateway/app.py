"""The FastAPI application, its lifespan and its error mapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from gateway.backend import Backend
from gateway.routes import health, jobs, judge, selection, taxonomies
from gateway.settings import GatewaySettings
from taxoforge import __version__
from taxoforge.bus import Bus
from taxoforge.errors import ConflictError, NotFoundError, PermanentError, TransientError
from taxoforge.logging import configure_logging

__all__ = ["create_app", "main"]

log = structlog.get_logger(__name__)


def _error(
    status: int, code: str, message: str, details: list[dict[str, str]] | None = None
) -> JSONResponse:
    error: dict[str, object] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status)


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

    app = FastAPI(
        title="taxoforge",
        version=__version__,
        summary="Taxonomy-driven generation and selection of SFT and preference data.",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(taxonomies.router)
    app.include_router(taxonomies.induce_router)
    app.include_router(judge.router)
    app.include_router(selection.router)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> Response:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> Response:
        return _error(409, "conflict", str(exc))

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

    @app.middleware("http")
    async def _access_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        if request.url.path not in ("/healthz", "/readyz"):
            log.info(
                "http",
                method=request.method,
                path=request.url.path,
                status=response.status_code,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
        return response

    return app


def main() -> None:
    """``python -m gateway``."""
    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_format, service="gateway")
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
