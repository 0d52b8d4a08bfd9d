"""Text that can be stored. Protobuf strings are UTF-8, and a Python str may hold what UTF-8
cannot: a lone surrogate, which JSON's "\\ud800" escape and YAML's make from valid documents.
Such text is refused where it comes in, with where it is, instead of failing deep inside."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["InvalidText", "json_text_problem", "storable"]

_SURROGATE = re.compile("[\ud800-\udfff]")
# A \u escape of a surrogate (either half); a pair is fine, so only these bodies are parsed.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class InvalidText(ValueError):
    """Text with a lone surrogate: valid JSON or YAML, but not Unicode that can be stored."""


def storable(text: str) -> str:
    """``text`` as it can be stored: surrogate pairs joined into their characters (PyYAML
    leaves "\\ud83d\\ude00" as two halves).

    Raises:
        InvalidText: a surrogate that is not half of a pair.
    """
    if not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError as exc:
        at = exc.start // 2 - 1  # in UTF-16 code units, after the two-byte BOM
        raise InvalidText(_problem(text[at], at)) from exc


def json_text_problem(body: bytes) -> tuple[str, str] | None:
    """Where a JSON body holds text that cannot be stored, as (field, problem); None when it
    has none, or is not JSON at all (its parser says so then)."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except (UnicodeDecodeError, LookupError):
        return None
    if not _SURROGATE.search(text) and not _SURROGATE_ESCAPE.search(text):
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            bad = _lone(value)
            if bad is not None:
                return where or "body", bad
        elif isinstance(value, dict):
            for key, item in value.items():
                bad = _lone(key)
                if bad is not None:
                    return where or "body", f"a key holds {bad}"
                stack.append((f"{where}.{key}" if where else key, item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


def _lone(text: str) -> str | None:
    # json.loads joins an escaped pair; a surrogate left in its text is one UTF-8 cannot carry.
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return _problem(found.group(), found.start())


def _problem(char: str, at: int) -> str:
    return f"a lone surrogate ({char!r}) at character {at}, which is not valid Unicode"
