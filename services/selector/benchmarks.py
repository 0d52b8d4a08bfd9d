"""The prompts of a registered benchmark file, which decontamination compares examples with.

Benchmarks ship in a handful of shapes; each row gives every prompt it holds:

- MT-Bench ``question.jsonl``: ``turns``, a list of strings, each turn a prompt;
- ``prompt``, ``question``, ``problem``, ``query``, ``input`` or ``text`` as a string;
- ``instruction`` with an optional ``input`` (Alpaca style), joined as an import joins them;
- ``messages``, ``conversations`` or ``turns`` as chat turns: every user turn is a prompt;
- a JSON string row is the prompt; a JSON array file holds such rows;
- plain text: one prompt per line.

A file that yields no prompt is refused (``BenchmarkScan.refusal`` says why, naming the keys
it found): registering it would make decontamination against it silently find nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.selector.imports import (
    ImportFileError,
    ImportLimits,
    MalformedRow,
    iter_rows,
    read_lines,
)

__all__ = ["BenchmarkScan", "benchmark_prompts", "scan_benchmark"]

# Keys whose string value is the whole prompt, in the order they are tried.
_PROMPT_KEYS = ("prompt", "question", "problem", "query", "input", "text")
# Keys holding a list of turns: strings (each a prompt) or chat messages (user turns are).
_TURN_KEYS = ("turns", "messages", "conversations")
_USER_ROLES = frozenset({"user", "human"})
_ROLE_KEYS = ("role", "from")
_CONTENT_KEYS = ("content", "value", "text")
# Keys named in a refusal, so the user sees what the reader looks for.
_READ_KEYS = ("turns", "prompt", "question", "instruction (+ input)", "messages", "conversations")
# A JSON array file is parsed whole; past this size it is refused rather than held in memory.
_MAX_ARRAY_BYTES = 256 << 20
# Keys a refusal lists at most.
_SHOWN_KEYS = 20


@dataclass
class BenchmarkScan:
    """What reading a benchmark file found."""

    prompts: int = 0
    rows: int = 0
    # Rows that are not JSON, or over the record limit.
    malformed: int = 0
    # Object rows that gave no prompt, by the keys they had.
    keys: Counter[str] = field(default_factory=Counter)
    # The first reason the file could not be read (as a whole) at all.
    error: str = ""
    kind: str = "text"

    def refusal(self) -> str | None:
        """Why the file cannot be a benchmark (it yields no prompt), or None."""
        if self.prompts:
            return None
        if self.error:
            return f"the file cannot be read as a benchmark: {self.error}"
        if self.rows == 0:
            return "the file holds no prompt: it is empty or every line is blank"
        read = ", ".join(_READ_KEYS)
        if self.keys:
            shown = ", ".join(repr(k) for k, _ in self.keys.most_common(_SHOWN_KEYS))
            return (
                f"no prompt found in its {self.rows} rows: they have the keys {shown}, and "
                f"prompts are read from {read}, or one prompt per line of plain text"
            )
        if self.malformed == self.rows:
            return (
                f"none of its {self.rows} rows is JSON or a text line within the record limit; "
                f"prompts are read from JSON rows with {read}, or one per line of plain text"
            )
        return f"no prompt found in its {self.rows} rows (every prompt is empty)"


def benchmark_prompts(path: Path, limits: ImportLimits | None = None) -> Iterator[str]:
    """The prompts of a benchmark file (see the module's shapes), read within ``limits`` like
    an import: a line or row over the record limit is skipped.

    Raises ``ImportFileError`` (while iterating) for a file that cannot be read within them.
    """
    return _read(path, limits or ImportLimits(), BenchmarkScan())


def scan_benchmark(path: Path, limits: ImportLimits | None = None) -> BenchmarkScan:
    """Read the whole file and count what it yields; a file that cannot be read is a scan
    with ``error`` set (never an exception), so the caller can refuse it with the reason."""
    scan = BenchmarkScan()
    try:
        for _ in _read(path, limits or ImportLimits(), scan):
            scan.prompts += 1
    except ImportFileError as exc:
        scan.error = str(exc)
        scan.prompts = 0
    return scan


def _read(path: Path, limits: ImportLimits, scan: BenchmarkScan) -> Iterator[str]:
    with path.open("rb") as fh:
        head = fh.read(4096)
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"PAR1"):
        scan.kind = "parquet"
        yield from _prompts(iter_rows(path, "parquet", limits), scan)
    elif stripped.startswith(b"["):
        scan.kind = "json"
        yield from _array(path, limits, scan)
    elif stripped.startswith((b"{", b'"')) or head.startswith(b"\x1f\x8b"):
        scan.kind = "jsonl"
        yield from _prompts(_json_lines(path, limits), scan)
    elif b"\x00" in head:
        raise ImportFileError("it is a binary file, not JSON Lines, Parquet or text lines")
    else:
        for _, line in read_lines(path, limits):
            if not isinstance(line, bytes):  # over the record limit
                scan.rows += 1
                scan.malformed += 1
                continue
            text = line.decode("utf-8", errors="replace").removeprefix("\ufeff").strip()
            if text:
                scan.rows += 1
                yield text


def _json_lines(path: Path, limits: ImportLimits) -> Iterator[tuple[int, Any]]:
    """JSON Lines rows, objects or strings (an import takes objects only)."""
    for number, line in read_lines(path, limits):
        if not isinstance(line, bytes):
            yield number, line
        elif line.strip():
            try:
                yield number, json.loads(line.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                yield number, MalformedRow(number, f"not JSON: {exc}")


def _array(path: Path, limits: ImportLimits, scan: BenchmarkScan) -> Iterator[str]:
    """A JSON array of rows (a ``.json`` benchmark)."""
    if path.stat().st_size > _MAX_ARRAY_BYTES:
        raise ImportFileError(
            f"it is a JSON array over {_MAX_ARRAY_BYTES >> 20} MiB; give it as JSON Lines"
        )
    try:
        value = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ImportFileError(f"it starts like a JSON array but is not one ({exc})") from exc
    if not isinstance(value, list):
        raise ImportFileError("it starts like a JSON array but is not one")
    cap = limits.max_record_bytes
    rows: list[tuple[int, Any]] = []
    for number, row in enumerate(value, 1):
        size = len(json.dumps(row, ensure_ascii=False).encode())
        rows.append((number, limits.too_large(number, size, "row") if size > cap else row))
    yield from _prompts(rows, scan)


def _prompts(rows: Iterable[tuple[int, Any]], scan: BenchmarkScan) -> Iterator[str]:
    for _, value in rows:
        scan.rows += 1
        if isinstance(value, MalformedRow):  # not JSON, or over the record limit
            scan.malformed += 1
            continue
        found = [p for p in _row_prompts(value) if p.strip()]
        if not found and isinstance(value, dict):
            scan.keys.update(str(k) for k in value)
        yield from found


def _row_prompts(value: Any) -> list[str]:
    """Every prompt of one row (an object, or a string that is the prompt)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict):
        return []
    for key in _TURN_KEYS:
        turns = value.get(key)
        if isinstance(turns, list):
            prompts = _turn_prompts(turns)
            if prompts:
                return prompts
    instruction = value.get("instruction")
    if isinstance(instruction, str) and instruction.strip():
        extra = value.get("input")
        # Joined as an Alpaca import joins them, so the n-grams are the ones a record has.
        if isinstance(extra, str) and extra.strip():
            return [f"{instruction}\n\n{extra}"]
        return [instruction]
    for key in _PROMPT_KEYS:
        text = value.get(key)
        if isinstance(text, str) and text.strip():
            return [text]
        if isinstance(text, list):  # a prompt given as chat turns
            prompts = _turn_prompts(text)
            if prompts:
                return prompts
    return []


def _turn_prompts(turns: list[Any]) -> list[str]:
    """Strings are each a prompt (MT-Bench turns); chat messages give their user turns."""
    prompts: list[str] = []
    for turn in turns:
        if isinstance(turn, str):
            prompts.append(turn)
        elif isinstance(turn, dict):
            role = next((turn[k] for k in _ROLE_KEYS if isinstance(turn.get(k), str)), "user")
            if role.strip().lower() not in _USER_ROLES:
                continue
            content = next((turn[k] for k in _CONTENT_KEYS if k in turn), None)
            if isinstance(content, str):
                prompts.append(content)
            elif isinstance(content, list):  # OpenAI content parts
                parts = [p.get("text") for p in content if isinstance(p, dict)]
                prompts.append("\n".join(p for p in parts if isinstance(p, str)))
    return [p for p in prompts if p.strip()]
