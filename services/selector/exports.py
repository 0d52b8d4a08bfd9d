"""Selected examples written in the formats fine-tuning tools read, as JSON Lines and Parquet.

Every format is written in both encodings, streaming: JSON Lines one line per example, Parquet
through ``pyarrow.parquet.ParquetWriter`` in row groups of ``row_group`` rows with an explicit
schema per format, so a million examples never sit in memory at once.

Formats (``taxoforge.selection.EXPORT_FORMATS``):

- ``sft``: TRL conversational SFT, ``{"id", "messages"}``.
- ``preference``: TRL conversational preference with an explicit prompt, ``{"id", "prompt",
  "chosen", "rejected", "score_chosen", "score_rejected"}`` (scores are null when unknown).
- ``openai-sft``: OpenAI chat fine-tuning, exactly ``{"messages"}``.
- ``openai-dpo``: OpenAI preference fine-tuning, exactly ``{"input": {"messages"},
  "preferred_output", "non_preferred_output"}``.
- ``alpaca``: ``{"id", "instruction", "input", "output", "system"}`` (``system`` is "" when
  the conversation has no system turn, so every row has the same columns); single-turn
  examples only.
- ``sharegpt``: ``{"id", "conversations": [{"from", "value"}]}``.

Order: every format keeps the order examples were written in, and formats of one family take
the same examples (the SFT family: ``sft``, ``openai-sft``, ``sharegpt``; the preference family:
``preference``, ``openai-dpo``). OpenAI files carry no id, so line i of ``openai-sft`` is the
i-th example of ``sft`` and line i of ``openai-dpo`` is the i-th row of ``preference``.

Loading the JSON Lines with ``datasets``: pass ``features=Features.from_arrow_schema(SCHEMAS[fmt])``
for an empty file (datasets cannot infer columns from no line). The Parquet files, which the
dataset card's configs point at, need nothing.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from services.selector.examples import Example, Message
from taxoforge import jsonl
from taxoforge.selection import EXPORT_FORMATS, PREFERENCE_FORMATS, SFT_FORMATS

__all__ = [
    "SCHEMAS",
    "ExportWriter",
    "WrittenFile",
    "convert",
    "skip_reason",
]

_ROLES = frozenset({"system", "user", "assistant"})
_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}
_SAFE_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

_MESSAGE = pa.struct(
    [
        pa.field("role", pa.string(), nullable=False),
        pa.field("content", pa.string(), nullable=False),
    ]
)
_MESSAGES = pa.list_(pa.field("item", _MESSAGE, nullable=False))
_TURN = pa.struct(
    [pa.field("from", pa.string(), nullable=False), pa.field("value", pa.string(), nullable=False)]
)

# One explicit Parquet schema per format: the same columns the JSON Lines records have.
SCHEMAS: dict[str, pa.Schema] = {
    "sft": pa.schema(
        [pa.field("id", pa.string(), nullable=False), pa.field("messages", _MESSAGES, False)]
    ),
    "preference": pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("prompt", _MESSAGES, nullable=False),
            pa.field("chosen", _MESSAGES, nullable=False),
            pa.field("rejected", _MESSAGES, nullable=False),
            pa.field("score_chosen", pa.float64(), nullable=True),
            pa.field("score_rejected", pa.float64(), nullable=True),
        ]
    ),
    "openai-sft": pa.schema([pa.field("messages", _MESSAGES, nullable=False)]),
    "openai-dpo": pa.schema(
        [
            pa.field("input", pa.struct([pa.field("messages", _MESSAGES, False)]), nullable=False),
            pa.field("preferred_output", _MESSAGES, nullable=False),
            pa.field("non_preferred_output", _MESSAGES, nullable=False),
        ]
    ),
    "alpaca": pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("instruction", pa.string(), nullable=False),
            pa.field("input", pa.string(), nullable=False),
            pa.field("output", pa.string(), nullable=False),
            pa.field("system", pa.string(), nullable=True),
        ]
    ),
    "sharegpt": pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("conversations", pa.list_(pa.field("item", _TURN, False)), False),
        ]
    ),
}

Record = dict[str, Any]


def _turns(messages: Sequence[Message]) -> list[Message]:
    """Plain ``{"role", "content"}`` copies: no other keys reach a file."""
    return [Message(role=m["role"], content=m["content"]) for m in messages]


def _score(example: Example, key: Literal["score_chosen", "score_rejected"]) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    value = example.get(key)
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _conversation_problem(messages: Sequence[Message]) -> str | None:
    """Why ``messages`` is no SFT conversation, or None: every SFT format checks the same."""
    if not messages:
        return "no_messages"
    if any(m["role"] not in _ROLES for m in messages):
        return "unknown_role"
    if messages[-1]["role"] != "assistant":
        return "no_assistant_reply"
    return None


def _convert(example: Example, fmt: str) -> Record | str:
    """The record of ``example`` in ``fmt``, or the reason it has none."""
    if fmt in PREFERENCE_FORMATS:
        prompt, chosen = example.get("prompt"), example.get("chosen")
        rejected = example.get("rejected")
        if not prompt or not chosen or not rejected:
            return "no_preference"
        if fmt == "preference":
            return {
                "id": example["id"],
                "prompt": _turns(prompt),
                "chosen": _turns(chosen),
                "rejected": _turns(rejected),
                "score_chosen": _score(example, "score_chosen"),
                "score_rejected": _score(example, "score_rejected"),
            }
        return {
            "input": {"messages": _turns(prompt)},
            "preferred_output": _turns(chosen),
            "non_preferred_output": _turns(rejected),
        }
    if fmt not in SFT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    messages = example["messages"]
    problem = _conversation_problem(messages)
    if problem is not None:
        return problem
    if fmt == "sft":
        return {"id": example["id"], "messages": _turns(messages)}
    if fmt == "openai-sft":
        return {"messages": _turns(messages)}
    if fmt == "sharegpt":
        turns = [{"from": _SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in messages]
        return {"id": example["id"], "conversations": turns}
    return _alpaca(example["id"], messages)


def _alpaca(example_id: str, messages: Sequence[Message]) -> Record | str:
    """One instruction and its reply, after an optional leading system turn."""
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    rest = messages[1:] if system is not None else messages
    if [m["role"] for m in rest] != ["user", "assistant"]:
        users = sum(m["role"] == "user" for m in rest)
        return "multi_turn" if users > 1 else "not_single_turn"
    record: Record = {
        "id": example_id,
        "instruction": rest[0]["content"],
        "input": "",
        "output": rest[1]["content"],
        "system": system or "",
    }
    return record


def convert(example: Example, fmt: str) -> dict[str, Any] | None:
    """The record ``example`` becomes in ``fmt``; None when it has nothing for that format.

    Raises:
        ValueError: ``fmt`` is not one of ``EXPORT_FORMATS``.
    """
    record = _convert(example, fmt)
    return None if isinstance(record, str) else record


def skip_reason(example: Example, fmt: str) -> str | None:
    """Why ``example`` has no record in ``fmt`` (e.g. "no_preference", "multi_turn"), or None."""
    record = _convert(example, fmt)
    return record if isinstance(record, str) else None


@dataclass
class WrittenFile:
    """One file an export wrote: a format's data file, or a ``meta/<kind>.jsonl`` side file."""

    kind: str
    format: Literal["jsonl", "parquet"]
    path: Path
    records: int


class _FormatSink:
    """One format's two open files; Parquet rows wait in a buffer of at most one row group."""

    def __init__(self, fmt: str, data_dir: Path, row_group: int) -> None:
        self.fmt = fmt
        self.row_group = row_group
        self.jsonl_path = data_dir / f"{fmt}.jsonl"
        self.parquet_path = data_dir / f"{fmt}.parquet"
        self.records = 0
        self.buffer: list[Record] = []
        self.jsonl: IO[bytes] | None = self.jsonl_path.open("wb")
        try:
            self.parquet: pq.ParquetWriter | None = pq.ParquetWriter(
                self.parquet_path, SCHEMAS[fmt]
            )
        except BaseException:
            self.jsonl.close()
            raise

    def write(self, record: Record) -> None:
        assert self.jsonl is not None, "closed"
        self.jsonl.write(jsonl.line(record))
        self.buffer.append(record)
        self.records += 1
        if len(self.buffer) >= self.row_group:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one row group."""
        if self.buffer and self.parquet is not None:
            table = pa.Table.from_pylist(self.buffer, schema=SCHEMAS[self.fmt])
            self.parquet.write_table(table, row_group_size=self.row_group)
        self.buffer = []

    def close(self) -> list[WrittenFile]:
        """Flush and close both files, the second even when the first fails."""
        try:
            if self.parquet is not None:
                try:
                    self.flush()
                finally:
                    self.parquet.close()
                    self.parquet = None
        finally:
            if self.jsonl is not None:
                self.jsonl.close()
                self.jsonl = None
        return [
            WrittenFile(self.fmt, "jsonl", self.jsonl_path, self.records),
            WrittenFile(self.fmt, "parquet", self.parquet_path, self.records),
        ]


class ExportWriter:
    """Streams examples into ``out_dir/data/<fmt>.jsonl`` and ``.parquet`` for each format.

    Every format's files are created at once, so a format that receives nothing still ends as
    valid empty files (a Parquet file with its schema). Usable as a context manager: leaving the
    block, even by an exception, closes every file.

    Attributes:
        skipped: per format, why examples were left out of it (reason -> count).
    """

    def __init__(
        self, out_dir: Path, formats: Sequence[str] = EXPORT_FORMATS, row_group: int = 5000
    ) -> None:
        unknown = [f for f in formats if f not in EXPORT_FORMATS]
        if unknown:
            raise ValueError(
                f"unknown export formats {unknown}; known: {', '.join(EXPORT_FORMATS)}"
            )
        if row_group < 1:
            raise ValueError(f"row_group must be positive, got {row_group}")
        self.out_dir = out_dir
        self.formats: tuple[str, ...] = tuple(dict.fromkeys(formats))
        self.skipped: dict[str, Counter[str]] = {fmt: Counter() for fmt in self.formats}
        self._extras: dict[str, tuple[Path, IO[bytes], list[int]]] = {}
        self._results: list[WrittenFile] | None = None
        data_dir = out_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._sinks: dict[str, _FormatSink] = {}
        try:
            for fmt in self.formats:
                self._sinks[fmt] = _FormatSink(fmt, data_dir, row_group)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        """Whether ``close`` has run."""
        return self._results is not None

    def write(self, example: Example) -> None:
        """Add ``example`` to every format that has a record for it; count the others."""
        if self.closed:
            raise RuntimeError("ExportWriter is closed")
        for fmt, sink in self._sinks.items():
            record = _convert(example, fmt)
            if isinstance(record, str):
                self.skipped[fmt][record] += 1
            else:
                sink.write(record)

    def open_extra(self, kind: str) -> None:
        """Create the side file ``out_dir/meta/<kind>.jsonl`` now, so it is written (empty)
        even when no record goes to it."""
        if self.closed:
            raise RuntimeError("ExportWriter is closed")
        if kind not in self._extras:
            if not _SAFE_KIND.match(kind) or kind in EXPORT_FORMATS:
                raise ValueError(f"invalid side-file kind {kind!r}")
            path = self.out_dir / "meta" / f"{kind}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._extras[kind] = (path, path.open("wb"), [0])

    def write_extra(self, kind: str, record: dict[str, Any]) -> None:
        """Append ``record`` to the side file ``out_dir/meta/<kind>.jsonl`` (e.g. "provenance",
        "dropped"), created on first use."""
        self.open_extra(kind)
        _, handle, count = self._extras[kind]
        # default=str: provenance may hold paths or timestamps; a side file must not fail on them.
        handle.write(jsonl.line(record, default=str))
        count[0] += 1

    def close(self) -> list[WrittenFile]:
        """Flush and close every file; returns what was written. A second call returns the
        same list without touching the files."""
        if self._results is not None:
            return self._results
        results: list[WrittenFile] = []
        error: BaseException | None = None
        for sink in self._sinks.values():
            try:
                results.extend(sink.close())
            except BaseException as exc:  # close the rest, then raise the first failure
                error = error or exc
        for kind, (path, handle, count) in self._extras.items():
            try:
                handle.close()
            except BaseException as exc:
                error = error or exc
            results.append(WrittenFile(kind, "jsonl", path, count[0]))
        self._results = results
        if error is not None:
            raise error
        return results

    def __enter__(self) -> ExportWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # The block's own exception is the one to report; a failure to close would hide it.
        with contextlib.suppress(Exception):
            self.close()
