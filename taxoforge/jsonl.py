"""JSON Lines, fast: the work files and exports the selector writes by the hundred thousand.

orjson writes and reads JSON several times faster than the standard library. It writes compact
JSON (no spaces after separators), keeps non-ASCII text as UTF-8, and writes NaN and the
infinities as null (``json`` would write ``NaN``, which is not JSON). What it cannot write (an
integer beyond 64 bits, a key that is not a string) is written by ``json`` in the same compact
form, so no value is refused or changed here.

:func:`loads_fields` is for reading back fields of a line, not whole records: orjson reads an
integer beyond 64 bits as a float, so a record that is passed on (an export) is read with
``json.loads``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["line", "loads_fields"]


def line(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as one line of JSON Lines (UTF-8, ending in a newline); ``default`` converts
    what JSON has no type for (as in ``json.dumps``)."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # beyond orjson: a huge integer, a non-string key
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)
        return (text + "\n").encode()


def loads_fields(data: bytes | str) -> Any:
    """A line's JSON, for the fields read of it (integers beyond 64 bits come back as floats)."""
    return orjson.loads(data)
