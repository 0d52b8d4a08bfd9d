"""The shared logging setup: a forced error's log lines carry the traceback, never a secret."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog
from pydantic import SecretStr

from taxoforge.logging import configure_logging, protect, secret_values
from taxoforge.settings import ProcessSettings

KEY = "tfk_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eA"
PROVIDER_KEY = "sk-proj-0123456789abcdef"
SETTING = "a-plain-nats-password-from-env"  # a SecretStr value: no pattern would spot it
LATE = "a-models-file-key-read-later"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging configured into a buffer for one test, put back as it was afterwards."""
    handlers = list(logging.getLogger().handlers)
    level = logging.getLogger().level
    hook = sys.excepthook
    out = io.StringIO()
    yield out
    sys.excepthook = hook
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _fail(credentials: str, headers: dict[str, str]) -> None:
    password = SETTING
    url = "nats://taxoforge:hunter2hunter2@nats:4222"
    late = LATE
    raise RuntimeError(f"upstream refused {credentials} at {url} ({password}, {late})")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_forced_error_logs_its_traceback_without_any_secret(
    stream: io.StringIO, fmt: str
) -> None:
    settings = ProcessSettings()
    settings.bus.nats_password = SecretStr(SETTING)
    configure_logging("info", fmt, service="test", secrets=secret_values(settings), stream=stream)
    structlog.configure(cache_logger_on_first_use=False)  # other tests log elsewhere
    protect(LATE)
    log = structlog.get_logger("test")
    try:
        _fail(KEY, {"Authorization": f"Bearer {PROVIDER_KEY}"})
    except RuntimeError as exc:
        log.error("unhandled_error", error=repr(exc), exc_info=exc)
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")

    text = stream.getvalue()
    assert "_fail" in text and "RuntimeError" in text  # the traceback is there
    assert "uvicorn.error" in text  # and the standard library's line too
    for secret in (KEY, KEY[4:20], PROVIDER_KEY, "hunter2hunter2", SETTING, LATE):
        assert secret not in text, secret
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines()]
        assert [line["event"] for line in lines] == [
            "unhandled_error",
            "Exception in ASGI application",
        ]
        frames = lines[0]["exception"][0]["frames"]
        assert frames[-1]["name"] == "_fail" and "locals" not in frames[-1]


def test_nested_values_are_redacted_by_name_and_by_content(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream=stream)
    structlog.configure(cache_logger_on_first_use=False)
    structlog.get_logger("test").info(
        "call",
        request={"headers": {"authorization": "Basic dXNlcjpwYXNz"}, "body": [f"key={KEY}"]},
        tokens=12,
    )
    line = json.loads(stream.getvalue())
    assert line["request"] == {
        "headers": {"authorization": "[redacted]"},
        "body": ["key=tfk_[redacted]"],
    }
    assert line["tokens"] == 12


def test_an_exception_nothing_caught_is_logged_redacted(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream=stream)
    structlog.configure(cache_logger_on_first_use=False)
    try:
        _fail(KEY, {})
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)  # what the interpreter calls last
    line = json.loads(stream.getvalue())
    assert line["event"] == "uncaught_exception" and line["level"] == "critical"
    assert line["exception"][0]["frames"][-1]["name"] == "_fail"
    assert KEY[4:20] not in stream.getvalue() and "hunter2hunter2" not in stream.getvalue()


def test_objects_are_logged_as_their_redacted_repr(stream: io.StringIO) -> None:
    configure_logging("info", "json", stream=stream)
    structlog.configure(cache_logger_on_first_use=False)
    structlog.get_logger("test").warning("retry", error=ValueError(f"refused {KEY}"), attempt=2)
    line = json.loads(stream.getvalue())
    assert line["error"] == "ValueError('refused tfk_[redacted]')" and line["attempt"] == 2
