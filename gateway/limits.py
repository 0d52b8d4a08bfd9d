"""Plain ASGI middleware: body size limits that hold for every body, declared length or
chunked; text that cannot be stored refused before any route reads it; and the access log."""

from __future__ import annotations

import json
import re
import time

import structlog
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taxoforge.text import json_text_problem

__all__ = ["AccessLog", "BodyLimit", "BodyTooLarge", "InvalidTextBody", "ValidText"]

log = structlog.get_logger("gateway.app")

# Routes whose body is a file, streamed to the object store: they get the upload limit.
_UPLOADS = re.compile(r"^/v1/(uploads|benchmarks/[^/]+)$")


class BodyTooLarge(HTTPException):
    """The body passed its limit while it was being read (a chunked body declares no length)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit:,} bytes")


class BodyLimit:
    """Refuses a body over its limit: at once when Content-Length says so, else as soon as the
    bytes read pass it, so a chunked request can never make the gateway hold more."""

    def __init__(self, app: ASGIApp, default_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self._default = default_bytes
        self._upload = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._upload if _UPLOADS.match(scope["path"]) else self._default
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, BodyTooLarge(limit))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


class InvalidTextBody(HTTPException):
    """A JSON body with text no stored field can carry (a lone surrogate, "\\ud800")."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(422, f"the request is invalid: {field}: {problem}")
        self.field = field
        self.problem = problem


class ValidText:
    """Refuses (422) a JSON body holding a lone surrogate, whatever the route: every text a
    request carries ends up in a protobuf message, which cannot hold one (valid JSON can).

    Goes inside BodyLimit: it sees the whole of every body but an upload's (those are files,
    streamed to the object store, never held, and read leniently by the selector).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _UPLOADS.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def checked() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body = b"".join(chunks)
                    chunks.clear()
                    problem = json_text_problem(body) if body else None
                    if problem is not None:
                        raise InvalidTextBody(*problem)
            return message

        await self.app(scope, checked, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects a malformed length itself
    return None


async def _refuse(send: Send, exc: BodyTooLarge) -> None:
    body = json.dumps({"error": {"code": "too_large", "message": exc.detail}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One log line per request: method, path (never the query or headers), status, time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ("/healthz", "/readyz"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        finally:
            log.info(
                "http",
                method=scope["method"],
                path=scope["path"],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
