"""structlog configuration shared by every process."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "redact"]

# Fields whose text is a secret whatever it says, and secrets recognisable inside any text:
# the gateway's API keys (tfk_...), bearer tokens and passwords in URLs.
_SECRET_FIELD = re.compile(r"(authorization|api_?key|password|passwd|secret|credentials?)$", re.I)
_SECRET_TEXT = (
    (re.compile(r"tfk_[A-Za-z0-9_-]{8,}"), "tfk_[redacted]"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [redacted]"),
    (re.compile(r"(?i)\b(sk-[A-Za-z0-9_-]{8,})"), "sk-[redacted]"),
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+@"), r"\1[redacted]@"),
)


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor that keeps secrets out of every log line."""
    for name, value in event.items():
        if not isinstance(value, str) or not value:
            continue
        if _SECRET_FIELD.search(name):
            event[name] = "[redacted]"
            continue
        for pattern, replacement in _SECRET_TEXT:
            value = pattern.sub(replacement, value)
        event[name] = value
    return event


def configure_logging(level: str = "info", fmt: str = "auto", service: str | None = None) -> None:
    """Configure structlog (and stdlib logging) once per process.

    Args:
        level: minimum level name.
        fmt: "json", "console", or "auto" (console when stderr is a terminal).
        service: bound into every line as ``service``.
    """
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer()
    else:
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer()
    shared.append(redact)  # last before rendering: tracebacks are text by now, and redacted too
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(message)s"
    )
    for noisy in ("LiteLLM", "litellm", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    if service:
        structlog.contextvars.bind_contextvars(service=service)
