"""structlog configuration shared by every process.

Every line, structlog's and the standard library's (uvicorn, grpc, asyncio, nats), goes through
one chain: an exception is rendered to data first (its frames' code, never their local
variables, which hold keys and request bodies), then every text in the line, however deeply
nested, is redacted, then the line is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from types import TracebackType
from typing import Any, TextIO

import structlog
from pydantic import BaseModel, SecretStr
from structlog.tracebacks import ExceptionDictTransformer

__all__ = ["Redactor", "configure_logging", "protect", "redact", "secret_values"]

# Fields whose text is a secret whatever it says, and secrets recognisable inside any text:
# the gateway's API keys (tfk_...), bearer tokens, provider keys and passwords in URLs.
_SECRET_FIELD = re.compile(
    r"(authorization|api_?key|password|passwd|secret|credentials?|token)$", re.I
)
_SECRET_TEXT = (
    (re.compile(r"tfk_[A-Za-z0-9_-]{8,}"), "tfk_[redacted]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"(?i)\b(sk-[A-Za-z0-9_-]{8,})"), "sk-[redacted]"),
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+@"), r"\1[redacted]@"),
)
_REDACTED = "[redacted]"
# A configured secret shorter than this is not looked for inside texts: it would blank out
# ordinary words all over the log, and it is no real secret either.
_MIN_SECRET = 6
_DEPTH = 32
# Secrets a process reads after its logging is configured (keys from a models file).
_LATER: set[str] = set()


def protect(*secrets: str) -> None:
    """Keep these texts out of every log line from now on (as ``configure_logging``'s
    ``secrets``), for a secret read after logging was configured."""
    _LATER.update(s for s in secrets if len(s) >= _MIN_SECRET)


class Redactor:
    """A structlog processor that keeps secrets out of every log line: texts in nested dicts
    and lists too (a rendered exception is one), and the values of ``secrets`` wherever they
    appear."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True)

    def text(self, value: str) -> str:
        """``value`` with every secret in it replaced."""
        for secret in (*self._secrets, *_LATER):
            if secret in value:
                value = value.replace(secret, _REDACTED)
        for pattern, replacement in _SECRET_TEXT:
            value = pattern.sub(replacement, value)
        return value

    def _value(self, value: Any, depth: int) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value) if value else value
        if depth > _DEPTH:
            return "[too deep to log]"
        if isinstance(value, dict):
            return {k: self._field(k, v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(v, depth + 1) for v in value]
        # Any other object is written as its repr (an exception, a URL, a settings model): the
        # text it would be shown as is what gets redacted.
        return self.text(repr(value))

    def _field(self, name: Any, value: Any, depth: int) -> Any:
        if (
            isinstance(name, str)
            and _SECRET_FIELD.search(name)
            and isinstance(value, str | dict | list | tuple)
            and value
        ):
            return _REDACTED
        return self._value(value, depth)

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for name, value in list(event.items()):
            event[name] = self._field(name, value, 0)
        return event


redact = Redactor()


def secret_values(settings: BaseModel) -> list[str]:
    """The values of every SecretStr in ``settings`` and the models it holds."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found.extend(secret_values(value))
    return [s for s in found if s]


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard library's handler this module installs (found again by its type)."""


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    service: str | None = None,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog (and stdlib logging) once per process.

    Args:
        level: minimum level name.
        fmt: "json", "console", or "auto" (console when stderr is a terminal).
        service: bound into every line as ``service``.
        secrets: texts never to write (the process's SecretStr values: ``secret_values``).
        stream: where lines go; default stderr.
    """
    out = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    exceptions: structlog.types.Processor
    if use_console:
        # Plain text, so the redaction sees the traceback before the renderer prints it.
        exceptions = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer()
    else:
        exceptions = structlog.processors.ExceptionRenderer(
            ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer()
    finish: list[structlog.types.Processor] = [exceptions, Redactor(secrets)]
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, *finish, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    handler = _Handler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *finish,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    for noisy in ("LiteLLM", "litellm", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # An exception nothing caught ends the process: logged like any other, not printed raw.
    sys.excepthook = _log_uncaught
    structlog.contextvars.clear_contextvars()
    if service:
        structlog.contextvars.bind_contextvars(service=service)


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    structlog.get_logger("taxoforge").critical(
        "uncaught_exception", exc_info=(kind, error, traceback)
    )
