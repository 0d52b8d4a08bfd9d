"""The prompts of a registered benchmark file, which decontamination compares examples with."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from services.selector.imports import (
    ImportLimits,
    MalformedRow,
    MalformedRowError,
    iter_rows,
    read_lines,
    to_example,
)

__all__ = ["benchmark_prompts"]

_PROMPT_KEYS = ("prompt", "question", "instruction", "query", "input", "text")


def benchmark_prompts(path: Path, limits: ImportLimits | None = None) -> Iterator[str]:
    """The prompts of a benchmark file: Parquet or JSON Lines rows (a conversation in any
    import shape gives its user turns; an object gives its prompt, question, instruction,
    query, input or text field; a JSON string is the prompt), or plain text, one per line.

    Read within ``limits`` like an import: a line or row over the record limit is skipped.
    Raises ``ImportFileError`` (while iterating) for a file that cannot be read within them.
    """
    limits = limits or ImportLimits()
    with path.open("rb") as fh:
        head = fh.read(4096)
    stripped = head.lstrip()
    if head.startswith(b"PAR1"):
        yield from _prompts(iter_rows(path, "parquet", limits))
    elif stripped.startswith((b"{", b'"')) or head.startswith(b"\x1f\x8b"):
        yield from _prompts(iter_rows(path, "jsonl", limits))
    else:
        for _, line in read_lines(path, limits):
            if isinstance(line, bytes) and line.strip():
                yield line.decode("utf-8", errors="replace").strip()


def _prompts(rows: Iterable[tuple[int, Any]]) -> Iterator[str]:
    for row, value in rows:
        if isinstance(value, MalformedRow):  # not JSON, or over the record limit
            continue
        if isinstance(value, str):
            prompt = value
        elif isinstance(value, dict):
            try:
                prompt = to_example(value, row, "benchmark")["query"]
            except MalformedRowError:
                prompt = next((value[k] for k in _PROMPT_KEYS if isinstance(value.get(k), str)), "")
        else:
            continue
        if prompt.strip():
            yield prompt
