"""JSON Lines, fast: the work files and exports the selector writes by the hundred thousand,
and the small JSON values every model call reads and writes (its reply, its cache entry).

orjson writes and reads JSON several times faster than the standard library. It writes compact
JSON (no spaces after separators), keeps non-ASCII text as UTF-8, and writes NaN and the
infinities as null (``json`` would write ``NaN``, which is not JSON). What it cannot write (an
integer beyond 64 bits, a key that is not a string) is written by ``json`` in the same compact
form, so no value is refused or changed here.

:func:`loads_fields` is for reading back fields of a line, not whole records: orjson reads an
integer beyond 64 bits as a float, so a record that is passed on (an export) is read with
``json.loads``. What orjson will not read (a lone surrogate escaped, which ``json`` reads
into a string) is read by ``json``, so nothing ``json`` reads is refused here either.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["encode", "line", "loads_fields"]


def line(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as one line of JSON Lines (UTF-8, ending in a newline); ``default`` converts
    what JSON has no type for (as in ``json.dumps``)."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # beyond orjson: a huge integer, a non-string key
        return (_compact(value, default) + "\n").encode()


def encode(value: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """``value`` as compact JSON in UTF-8 (as :func:`line`, without the newline)."""
    try:
        return orjson.dumps(value, default=default)
    except TypeError:
        return _compact(value, default).encode()


def _compact(value: Any, default: Callable[[Any], Any] | None) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=default)


def loads_fields(data: bytes | str) -> Any:
    """A line's JSON, for the fields read of it (integers beyond 64 bits come back as floats)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # a lone surrogate escaped, say: json reads it
        return json.loads(data)
