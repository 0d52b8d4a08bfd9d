"""Importing datasets: a JSON Lines or Parquet file in, a stream of examples out.

Users bring existing fine-tuning data to select from. Every row of the file becomes an
``Example``, or a ``MalformedRow`` that says by row number why it could not; nothing is dropped
silently. Rows are streamed (JSON Lines line by line, gzip decompressed on the fly; Parquet batch
by batch), so memory stays flat whatever the file's size.

Row shapes (the common shapes of fine-tuning data), detected per row by their keys in this order:

- ``messages``: OpenAI / TRL conversational, ``{"messages": [{"role", "content"}, ...]}``;
  content may be a list of OpenAI text parts (joined by a newline).
- ``sharegpt``: ``{"conversations": [{"from", "value"}, ...]}`` (optional "system" field).
- ``alpaca``: ``{"instruction", "input", "output"}`` (optional "system").
- ``preference``: TRL explicit prompt ``{"prompt", "chosen", "rejected"}`` (text or
  conversational), TRL implicit prompt ``{"chosen", "rejected"}`` (whole conversations; the
  prompt is their longest common prefix), OpenAI DPO ``{"input": {"messages"},
  "preferred_output", "non_preferred_output"}``.

Null fields count as absent (a Parquet file has every column on every row). A row's other
non-null fields go to ``metadata`` as plain JSON values; its own "id" is kept as "source_id".

Files are tenant input, so reading is bounded by ``ImportLimits`` whatever the file holds: a row
longer than ``max_record_bytes`` is skipped without being held whole (a ``TooLargeRow``, the
rest import), and a file that unpacks to more than its compressed size times
``max_compression_ratio`` (or ``max_decompressed_bytes``) is refused as a decompression bomb,
as is a Parquet file with a page over ``max_page_bytes`` (a page is unpacked whole).
The record limit also bounds every queue message made from a row (a tag task carries one query,
a compare task a sample and its reference), which must stay under NATS's max payload.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import gzip
import io
import json
import math
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import pyarrow as pa
import pyarrow.parquet as pq

from services.selector.examples import SHAPES, Example, Message, Shape
from services.selector.parquet_pages import PageFormatError, page_sizes
from taxoforge.tokens import messages_tokens

__all__ = [
    "HEAD_BYTES",
    "MAX_RECORD_BYTES_CEILING",
    "PARQUET_BATCH_ROWS",
    "Format",
    "ImportFileError",
    "ImportLimits",
    "MalformedRow",
    "MalformedRowError",
    "TooLargeRow",
    "detect_format",
    "iter_rows",
    "read_examples",
    "read_lines",
    "sniff_format",
    "to_example",
]

Format = Literal["jsonl", "parquet"]

# How much of a file ``sniff_format`` reads to tell its format.
HEAD_BYTES = 64 * 1024
# Rows per Parquet batch: few, so that a batch of rows near the record limit stays small
# (64 x 256 KiB = 16 MiB of Arrow data) before any row is turned into Python objects.
PARQUET_BATCH_ROWS = 64
# The largest record limit allowed: a compare task carries two records' texts (a sample and its
# cluster's reference) and must fit NATS's default max payload (1 MiB) with room for its envelope.
MAX_RECORD_BYTES_CEILING = 480 * 1024
# A compressed file may always unpack to this much, whatever its ratio: a small file of very
# repetitive rows is not a bomb, and this much is cheap to read through.
_RATIO_FLOOR_BYTES = 64 << 20
# Bytes read at a time while skipping through a line that is over the record limit.
_SKIP_CHUNK = 1 << 16
# A reason is cut to this many characters: it quotes tenant text (a key, a role), and reasons go
# into the job record, which travels as one message.
_MAX_REASON_CHARS = 300

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_BOM = b"\xef\xbb\xbf"
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_ROLES = ("system", "user", "assistant")
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
}
_TEXT_PARTS = ("text", "input_text", "output_text")
_ACCEPTED = (
    "'messages' (messages), 'conversations' (sharegpt), 'instruction' + 'output' (alpaca), "
    "'prompt' + 'chosen' + 'rejected', 'chosen' + 'rejected' or 'input' + 'preferred_output' "
    "+ 'non_preferred_output' (preference)"
)
_EXPECTED = {
    "messages": "'messages'",
    "sharegpt": "'conversations'",
    "alpaca": "'instruction' and 'output'",
    "preference": "'prompt', 'chosen' and 'rejected'; 'chosen' and 'rejected'; or 'input', "
    "'preferred_output' and 'non_preferred_output'",
}


class ImportFileError(Exception):
    """A file that cannot be read at all; the message says what is wrong and how to fix it."""


class MalformedRowError(ValueError):
    """One row that cannot become an example; the message is the reason shown to the user."""


@dataclass
class MalformedRow:
    """A row that is not an example, reported instead of dropped.

    ``row`` is 1-based: the line number in a JSON Lines file (blank lines count as lines but
    are not rows), the row number in a Parquet file.
    """

    row: int
    reason: str


@dataclass
class TooLargeRow(MalformedRow):
    """A row over the record limit, skipped unread: ``size`` is its length in bytes (the line
    without its newline; a Parquet row's Arrow data), ``limit`` the limit it exceeds."""

    size: int = 0
    limit: int = 0


@dataclass(frozen=True)
class ImportLimits:
    """How much an import may hold or unpack; the selector's settings give them
    (TAXOFORGE_IMPORT_MAX_RECORD_BYTES, ..._MAX_DECOMPRESSED_BYTES, ..._MAX_COMPRESSION_RATIO,
    ..._MAX_PAGE_BYTES).

    Reading holds at most one line of ``max_record_bytes`` (JSON Lines), or one Parquet page
    of ``max_page_bytes`` and a batch of ``PARQUET_BATCH_ROWS`` rows, at a time, plus what one
    row becomes as an example.
    """

    max_record_bytes: int = 256 * 1024
    max_decompressed_bytes: int = 20 << 30
    max_compression_ratio: float = 100.0
    # A Parquet reader unpacks a page whole, whatever the batch size, and holds two to three
    # times this while it does (a dictionary page counts twice its size). Writers aim at 1 MiB
    # pages, but pyarrow's checks the size only every 1024 rows: 32 KiB rows make 32 MiB pages.
    max_page_bytes: int = 32 << 20

    def __post_init__(self) -> None:
        if not 0 < self.max_record_bytes <= MAX_RECORD_BYTES_CEILING:
            raise ValueError(
                f"the record limit must be between 1 and {MAX_RECORD_BYTES_CEILING} bytes "
                "(a compare task carries two records in one NATS message)"
            )
        if self.max_decompressed_bytes <= 0 or self.max_page_bytes <= 0:
            raise ValueError("the decompressed-bytes and page limits must be positive")
        if self.max_compression_ratio < 1:
            raise ValueError("the compression ratio limit must be at least 1")

    def unpacked_budget(self, compressed: int) -> int:
        """The most a file of ``compressed`` bytes may unpack to."""
        by_ratio = max(int(compressed * self.max_compression_ratio), _RATIO_FLOOR_BYTES)
        return min(self.max_decompressed_bytes, by_ratio)

    def bomb(self, name: str, compressed: int, budget: int) -> ImportFileError:
        """The error for a file that unpacks past ``budget``."""
        if budget >= self.max_decompressed_bytes:
            why = f"the limit, TAXOFORGE_IMPORT_MAX_DECOMPRESSED_BYTES ({_human(budget)})"
        else:
            why = (
                f"{self.max_compression_ratio:g} times its {_human(compressed)} size "
                f"(TAXOFORGE_IMPORT_MAX_COMPRESSION_RATIO): a decompression bomb, or data that "
                "repeats itself far more than real data does"
            )
        return ImportFileError(
            f"{name!r} unpacks to more than {_human(budget)}, over {why}; the import is "
            "refused before it is unpacked further"
        )

    def too_large(self, row: int, size: int, what: str = "line") -> TooLargeRow:
        return TooLargeRow(
            row,
            f"the {what} is {_human(size)}, over the {_human(self.max_record_bytes)} limit of "
            "one record (TAXOFORGE_IMPORT_MAX_RECORD_BYTES); it was skipped unread",
            size,
            self.max_record_bytes,
        )


def _human(size: int) -> str:
    """A byte count in binary units: "900 bytes", "256 KiB", "1.5 GiB"."""
    if size < 1024:
        return f"{size} bytes"
    value, units = size / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.0f} {units[0]}" if value.is_integer() else f"{value:.1f} {units[0]}"


def _short(reason: str) -> str:
    """``reason`` cut to a size a report may carry (it may quote the tenant's text)."""
    if len(reason) <= _MAX_REASON_CHARS:
        return reason
    suffix = f"... ({len(reason)} characters)"
    return reason[: _MAX_REASON_CHARS - len(suffix)] + suffix


# ---- formats ----


def detect_format(name: str, head: bytes) -> Format:
    """The format of a file from its name and first bytes.

    By the name's suffix (.jsonl, .ndjson, .json with one object per line, each optionally
    .gz; .parquet), else by content (Parquet magic, gzip magic, a leading '{'). Raises
    ``ImportFileError`` for an empty file, a JSON array, pretty-printed JSON, content that
    contradicts the name, or anything else, saying how to convert it.
    """
    lower = name.lower()
    if not head:
        raise ImportFileError(f"{name!r} is empty: there are no rows to import")
    if lower.endswith(".parquet"):
        if not head.startswith(_PARQUET_MAGIC):
            raise ImportFileError(
                f"{name!r} is named as Parquet but is not a Parquet file (it does not start "
                "with 'PAR1'): export it again as Parquet, or rename it if it is JSON Lines"
            )
        return "parquet"
    if lower.removesuffix(".gz").endswith(_JSONL_SUFFIXES):
        if head.startswith(_PARQUET_MAGIC):
            raise ImportFileError(
                f"{name!r} is named as JSON Lines but is a Parquet file: rename it to end in "
                ".parquet"
            )
        _check_jsonl_start(name, _text_head(name, head))
        return "jsonl"
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    text = _text_head(name, head)
    if text.startswith((b"{", b"[")) or (head.startswith(_GZIP_MAGIC) and not text):
        _check_jsonl_start(name, text)
        return "jsonl"
    raise ImportFileError(
        f"cannot tell the format of {name!r}: import JSON Lines (.jsonl, .ndjson, or .json "
        "with one object per line; optionally gzipped as .gz) or Parquet (.parquet)"
    )


def sniff_format(path: Path) -> Format:
    """``detect_format`` of a file on disk, from its name and first ``HEAD_BYTES`` bytes."""
    try:
        with path.open("rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise ImportFileError(f"cannot read {path.name!r}: {e.strerror or e}") from e
    return detect_format(path.name, head)


def _text_head(name: str, head: bytes) -> bytes:
    """The start of the file's text: gunzipped if gzipped, without BOM or leading whitespace."""
    if head.startswith(_GZIP_MAGIC):
        try:
            head = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(head, HEAD_BYTES)
        except zlib.error as e:
            raise ImportFileError(
                f"{name!r} starts like a gzip file but is not valid gzip ({e}): compress it "
                "again with gzip, or import it uncompressed"
            ) from e
    return head.removeprefix(_BOM).lstrip()


def _check_jsonl_start(name: str, text: bytes) -> None:
    """Raise unless ``text`` (a file's first non-blank bytes) can start JSON Lines."""
    if not text:
        return
    stem = name.split(".", 1)[0] or "rows"
    if text.startswith(b"["):
        raise ImportFileError(
            f"{name!r} is a JSON array ('[' first), not JSON Lines: write one object per line, "
            f"e.g. `jq -c '.[]' {name} > {stem}.jsonl`"
        )
    if not text.startswith(b"{"):
        first = text[:1].decode("utf-8", "replace")
        raise ImportFileError(
            f"{name!r} is not JSON Lines: it starts with {first!r} where a JSON object ('{{') "
            "was expected; convert it to JSON Lines (one JSON object per line) or Parquet"
        )
    first_line, newline, _ = text.partition(b"\n")
    if newline and first_line.strip() == b"{":
        raise ImportFileError(
            f"{name!r} holds JSON objects spread over several lines; JSON Lines needs one "
            f"object per line: convert it with `jq -c . {name} > {stem}.jsonl`"
        )


# ---- reading ----


def read_examples(
    path: Path,
    fmt: Format,
    shape: str,
    job_id: str,
    limits: ImportLimits | None = None,
    *,
    count_tokens: bool = True,
) -> Iterator[Example | MalformedRow]:
    """Every row of the file in order: an ``Example``, or a ``MalformedRow`` saying why not
    (a ``TooLargeRow`` for a row over ``limits.max_record_bytes``, skipped unread).

    ``shape`` is "auto" (each row by its keys) or one of ``SHAPES`` (a row not in that shape is
    malformed). Rows are read lazily, one line or one Parquet batch at a time. With
    ``count_tokens`` False an example's ``tokens`` is -1, for the reader to count in batches
    (``screening.screen`` does, for what it keeps). Raises at once
    ``ValueError`` for an unknown shape or format and ``ImportFileError`` for a missing file;
    raises ``ImportFileError`` while iterating when the file cannot be read at all (not JSON
    Lines or Parquet, a JSON array, no rows, corrupt, unpacking past the limits).
    """
    _check_shape(shape)
    return _examples(iter_rows(path, fmt, limits), shape, job_id, count_tokens)


def read_lines(path: Path, limits: ImportLimits) -> Iterator[tuple[int, bytes | TooLargeRow]]:
    """The file's lines with their 1-based numbers, gunzipped on the fly when it starts with
    gzip magic; a line over the record limit comes as a ``TooLargeRow``, read through in
    chunks and never held whole. Raises ``ImportFileError`` once the file has unpacked to more
    than the limits allow."""
    try:
        raw = path.open("rb")
    except OSError as e:
        raise ImportFileError(f"cannot open {path.name!r}: {e.strerror or e}") from e
    cap = limits.max_record_bytes
    number = 0
    with raw:
        try:
            size = os.fstat(raw.fileno()).st_size
            stream: io.BufferedReader | gzip.GzipFile = raw
            budget = limits.max_decompressed_bytes
            if raw.peek(2)[:2] == _GZIP_MAGIC:
                stream = gzip.GzipFile(fileobj=raw, mode="rb")
                budget = limits.unpacked_budget(size)
            unpacked = 0
            while True:
                # Room for a line exactly at the limit and its "\r\n"; more is too large.
                line = stream.readline(cap + 2)
                if not line:
                    return
                number += 1
                unpacked += len(line)
                if unpacked > budget:
                    raise limits.bomb(path.name, size, budget)
                # A whole line: it ends with its newline, or the file ends first.
                whole = line.endswith(b"\n") or len(line) < cap + 2
                if whole and len(line.rstrip(b"\r\n")) <= cap:
                    yield number, line
                    continue
                length, tail = len(line), line[-2:]
                while not whole:
                    piece = stream.readline(_SKIP_CHUNK)
                    unpacked += len(piece)
                    if unpacked > budget:
                        raise limits.bomb(path.name, size, budget)
                    length += len(piece)
                    tail = (tail + piece)[-2:]  # "\r\n" may straddle two pieces
                    whole = not piece or piece.endswith(b"\n")
                ending = len(tail) - len(tail.rstrip(b"\r\n"))
                yield number, limits.too_large(number, length - ending)
        except (OSError, EOFError, zlib.error) as e:
            raise ImportFileError(
                f"{path.name!r} cannot be read after line {number}: {e}; if it is gzipped, "
                "check that it was copied completely"
            ) from e


def iter_rows(
    path: Path, fmt: Format, limits: ImportLimits | None = None
) -> Iterator[tuple[int, Any | MalformedRow]]:
    """Every row of the file in order with its 1-based number: the parsed JSON value (a JSON
    Lines line) or the row as a dict (Parquet), or a MalformedRow for a line that is not JSON
    (a ``TooLargeRow`` for a row over the record limit).

    Raises ``ImportFileError`` (while iterating) like ``read_examples``.
    """
    if not path.exists():
        raise ImportFileError(f"{path.name!r} does not exist")
    limits = limits or ImportLimits()
    if fmt == "jsonl":
        return _jsonl_rows(path, limits)
    if fmt == "parquet":
        return _parquet_rows(path, limits)
    raise ValueError(f"unknown format {fmt!r}: use 'jsonl' or 'parquet'")


def _examples(
    rows: Iterator[tuple[int, Any | MalformedRow]], shape: str, job_id: str, count: bool = True
) -> Iterator[Example | MalformedRow]:
    for number, value in rows:
        if isinstance(value, MalformedRow):
            yield value
            continue
        try:
            yield to_example(value, number, job_id, shape, count_tokens=count)
        except MalformedRowError as e:
            yield MalformedRow(number, _short(str(e)))


def _jsonl_rows(path: Path, limits: ImportLimits) -> Iterator[tuple[int, Any | MalformedRow]]:
    started = False
    for number, line in read_lines(path, limits):
        if isinstance(line, TooLargeRow):
            # A row, whatever it holds: it was never read whole to tell.
            started = True
            yield number, line
            continue
        if number == 1:
            line = line.removeprefix(_BOM)
        if not line.strip():
            continue
        if not started:
            _check_jsonl_start(path.name, line.lstrip())
            started = True
        yield number, _parse_line(line, number)
    if not started:
        raise ImportFileError(f"{path.name!r} has no rows: it is empty or every line is blank")


def _parse_line(line: bytes, number: int) -> Any | MalformedRow:
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        return MalformedRow(number, f"the line is not valid UTF-8 (bad byte at offset {e.start})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        return MalformedRow(number, f"invalid JSON at column {e.colno}: {e.msg}")
    except ValueError as e:  # an integer longer than Python reads (sys.int_info)
        return MalformedRow(number, _short(f"invalid JSON: {e}"))
    except RecursionError:
        return MalformedRow(number, "invalid JSON: nested too deeply to read")


def _parquet_rows(path: Path, limits: ImportLimits) -> Iterator[tuple[int, Any | MalformedRow]]:
    try:
        # Column chunks are read through a small buffer, not whole (pre_buffer would load a
        # row group's compressed bytes at once).
        parquet = pq.ParquetFile(
            path, buffer_size=1 << 20, pre_buffer=False, thrift_string_size_limit=16 << 20
        )
    except (OSError, pa.ArrowException) as e:
        raise ImportFileError(
            f"{path.name!r} is not a readable Parquet file ({e}): export it again as Parquet"
        ) from e
    try:
        with parquet:
            meta = parquet.metadata
            if meta.num_rows == 0:
                raise ImportFileError(f"{path.name!r} has no rows")
            _check_pages(path, meta, limits)
            row = 0
            batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS)
            while True:
                try:
                    batch = next(batches, None)
                    records = [] if batch is None else _batch_rows(batch, row, limits)
                except (OSError, ValueError, pa.ArrowException) as e:
                    raise ImportFileError(
                        f"{path.name!r} cannot be read after row {row}: {e}; export it again"
                    ) from e
                if batch is None:
                    return
                for record in records:
                    row += 1
                    yield row, record
    finally:
        # What reading unpacked is free now: give it back rather than keep it pooled.
        pa.default_memory_pool().release_unused()


def _check_pages(path: Path, meta: pq.FileMetaData, limits: ImportLimits) -> None:
    """Refuse a file whose pages unpack past the limits, from their headers, before any page
    is unpacked: a page is unpacked whole, whatever the batch size."""
    try:
        pages = page_sizes(path, meta)
    except (PageFormatError, OSError) as e:
        raise ImportFileError(
            f"{path.name!r} is not a readable Parquet file ({e}): export it again as Parquet"
        ) from e
    size = path.stat().st_size
    budget = limits.unpacked_budget(size)
    if pages.unpacked > budget:
        raise limits.bomb(path.name, size, budget)
    if pages.largest > limits.max_page_bytes:
        raise ImportFileError(
            f"{path.name!r} has a page too large to read: {pages.where} unpacks to "
            f"{_human(pages.largest)} (a dictionary page counts twice), over the "
            f"{_human(limits.max_page_bytes)} limit (TAXOFORGE_IMPORT_MAX_PAGE_BYTES); a page "
            "is read whole. Write the file again with smaller pages (pyarrow: "
            "pq.write_table(table, path, write_batch_size=64, use_dictionary=False)), or "
            "import it as JSON Lines, where a row over the record limit is skipped on its own"
        )


def _batch_rows(
    batch: pa.RecordBatch, before: int, limits: ImportLimits
) -> list[dict[str, Any] | TooLargeRow]:
    """A Parquet batch's rows as dicts; a row over the record limit (its Arrow data) as a
    ``TooLargeRow``, never turned into Python objects."""
    cap = limits.max_record_bytes
    if batch.nbytes <= cap:  # every row is smaller than the whole batch
        return cast("list[dict[str, Any] | TooLargeRow]", batch.to_pylist())
    sizes = [batch.slice(i, 1).nbytes for i in range(batch.num_rows)]
    keep = [i for i, n in enumerate(sizes) if n <= cap]
    kept = iter(batch.take(pa.array(keep, pa.int64())).to_pylist() if keep else [])
    return [
        next(kept) if n <= cap else limits.too_large(before + i + 1, n, "row")
        for i, n in enumerate(sizes)
    ]


# ---- rows ----


@dataclass
class _Parsed:
    """A row read in one shape: its conversation, and which of its fields that used."""

    shape: Shape
    messages: list[Message]
    used: tuple[str, ...]
    prompt: list[Message] | None = None
    chosen: list[Message] | None = None
    rejected: list[Message] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The input the instruction is about, given apart (Alpaca's "input").
    context: str = ""


def to_example(
    obj: Any, row: int, job_id: str, shape: str = "auto", *, count_tokens: bool = True
) -> Example:
    """One parsed row as an ``Example``; raises ``MalformedRowError`` saying why it is not one.

    ``shape`` "auto" reads the row by its keys; a named shape accepts only that shape.
    """
    _check_shape(shape)
    if not isinstance(obj, dict):
        raise MalformedRowError(f"the row is {_kind(obj)}, not a JSON object")
    fields: dict[str, Any] = {k: v for k, v in obj.items() if v is not None}
    parse = _detect(fields, shape)
    if parse is None:
        found = ", ".join(repr(k) for k in fields) or "none"
        if shape == "auto":
            raise MalformedRowError(
                f"the row is in no known shape: found keys {found}; expected {_ACCEPTED}"
            )
        raise MalformedRowError(
            f"the row is not in the {shape} shape: expected {_EXPECTED[shape]}; found keys {found}"
        )
    try:
        return _example(parse(fields), fields, row, job_id, count_tokens)
    except RecursionError as e:
        raise MalformedRowError("the row is nested too deeply to read") from e


def _check_shape(shape: str) -> None:
    if shape != "auto" and shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: use 'auto' or one of {', '.join(SHAPES)}")


def _detect(fields: dict[str, Any], shape: str) -> Callable[[dict[str, Any]], _Parsed] | None:
    """The parser for the first form (in detection order) whose keys the row has."""
    forms: tuple[tuple[Shape, tuple[str, ...], Callable[[dict[str, Any]], _Parsed]], ...] = (
        ("messages", ("messages",), _parse_messages),
        ("sharegpt", ("conversations",), _parse_sharegpt),
        ("alpaca", ("instruction", "output"), _parse_alpaca),
        ("preference", ("prompt", "chosen", "rejected"), _parse_explicit),
        ("preference", ("chosen", "rejected"), _parse_implicit),
        ("preference", ("input", "preferred_output"), _parse_openai),
    )
    for form_shape, keys, parse in forms:
        if shape in ("auto", form_shape) and all(k in fields for k in keys):
            return parse
    return None


def _example(
    parsed: _Parsed, fields: dict[str, Any], row: int, job_id: str, count_tokens: bool = True
) -> Example:
    messages = parsed.messages
    asked = parsed.prompt if parsed.prompt is not None else messages
    item_id = f"r{row:07d}"
    example: Example = {
        "id": f"{job_id}/{item_id}",
        "item_id": item_id,
        "row": row,
        "shape": parsed.shape,
        "messages": messages,
        "query": "\n\n".join(m["content"] for m in asked if m["role"] == "user"),
        "response": messages[-1]["content"],
        "tokens": messages_tokens(cast("list[dict[str, Any]]", messages)) if count_tokens else -1,
        "metadata": {},
    }
    if parsed.context:
        example["context"] = parsed.context
    if parsed.prompt is not None and parsed.chosen is not None and parsed.rejected is not None:
        example["prompt"] = parsed.prompt
        example["chosen"] = parsed.chosen
        example["rejected"] = parsed.rejected
    used = set(parsed.used)
    for key in ("language", "lang"):
        value = fields.get(key)
        if isinstance(value, str) and value.strip():
            example["language"] = value
            used.add(key)
            break
    if parsed.shape == "preference":
        score_chosen = _number(fields.get("score_chosen"))
        if score_chosen is not None:
            example["score_chosen"] = score_chosen
            used.add("score_chosen")
        score_rejected = _number(fields.get("score_rejected"))
        if score_rejected is not None:
            example["score_rejected"] = score_rejected
            used.add("score_rejected")
    id_key = "id" if "source_id" in fields else "source_id"
    metadata: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in used:
            metadata[id_key if key == "id" else _plain_text(key)] = _plain(value)
    metadata.update(parsed.extra)
    example["metadata"] = metadata
    return example


def _number(value: Any) -> float | None:
    """A finite number as a float; None for anything else (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# ---- shapes ----


def _parse_messages(fields: dict[str, Any]) -> _Parsed:
    turns = _turns(fields["messages"], "messages")
    _check_conversation(turns, "messages")
    return _Parsed("messages", turns, ("messages",))


def _parse_sharegpt(fields: dict[str, Any]) -> _Parsed:
    turns = _turns(fields["conversations"], "conversations", sharegpt=True)
    _check_conversation(turns, "conversations")
    used: tuple[str, ...] = ("conversations",)
    system = fields.get("system")
    if system is not None and not any(t["role"] == "system" for t in turns):
        text = _text(system, "'system'")
        if text.strip():
            turns.insert(0, {"role": "system", "content": text})
        used = ("conversations", "system")
    return _Parsed("sharegpt", turns, used)


def _parse_alpaca(fields: dict[str, Any]) -> _Parsed:
    instruction = _text(fields["instruction"], "'instruction'")
    if not instruction.strip():
        raise MalformedRowError("'instruction' is empty")
    extra = _text(fields.get("input", ""), "'input'")
    output = _text(fields["output"], "'output'")
    if not output.strip():
        raise MalformedRowError("'output' is empty; it is the reply that is taught")
    system = _text(fields.get("system", ""), "'system'")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    turns: list[Message] = [{"role": "system", "content": system}] if system.strip() else []
    turns += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    parsed = _Parsed("alpaca", turns, ("instruction", "input", "output", "system"))
    if extra.strip():
        parsed.context = extra
    return parsed


def _parse_explicit(fields: dict[str, Any]) -> _Parsed:
    prompt = _prompt(fields["prompt"], "prompt")
    chosen = _reply(fields["chosen"], "chosen")
    rejected = _reply(fields["rejected"], "rejected")
    return _preference(prompt, chosen, rejected, ("prompt", "chosen", "rejected"))


def _parse_implicit(fields: dict[str, Any]) -> _Parsed:
    chosen_v, rejected_v = fields["chosen"], fields["rejected"]
    if isinstance(chosen_v, str) or isinstance(rejected_v, str):
        raise MalformedRowError(
            "'chosen' and 'rejected' are text with no 'prompt': add the 'prompt' field, or give "
            "'chosen' and 'rejected' as whole conversations (lists of messages)"
        )
    whole_chosen = _turns(chosen_v, "chosen")
    whole_rejected = _turns(rejected_v, "rejected")
    shared = 0
    for a, b in zip(whole_chosen, whole_rejected, strict=False):
        if a != b:
            break
        shared += 1
    if shared == 0:
        raise MalformedRowError(
            "'chosen' and 'rejected' share no prompt turns: with no 'prompt' field they must be "
            "whole conversations that start with the same prompt"
        )
    if shared == len(whole_chosen) == len(whole_rejected):
        raise MalformedRowError("chosen and rejected are the same reply")
    for name, whole in (("chosen", whole_chosen), ("rejected", whole_rejected)):
        if shared == len(whole):
            raise MalformedRowError(f"'{name}' has no reply after the prompt the two share")
    prompt = whole_chosen[:shared]
    _check_prompt(prompt, "the prompt shared by 'chosen' and 'rejected'", "chosen")
    chosen = whole_chosen[shared:]
    rejected = whole_rejected[shared:]
    _check_reply(chosen, "chosen", offset=shared)
    _check_reply(rejected, "rejected", offset=shared)
    return _preference(prompt, chosen, rejected, ("chosen", "rejected"))


def _parse_openai(fields: dict[str, Any]) -> _Parsed:
    given = fields["input"]
    if not isinstance(given, dict):
        raise MalformedRowError(f"'input' is {_kind(given)}, not an object with 'messages'")
    if given.get("messages") is None:
        raise MalformedRowError("'input' has no 'messages'")
    if "non_preferred_output" not in fields:
        raise MalformedRowError("'non_preferred_output' is missing: it holds the rejected reply")
    prompt = _turns(given["messages"], "input.messages")
    _check_prompt(prompt, "'input.messages'", "input.messages")
    chosen = _reply(fields["preferred_output"], "preferred_output")
    rejected = _reply(fields["non_preferred_output"], "non_preferred_output")
    parsed = _preference(
        prompt, chosen, rejected, ("input", "preferred_output", "non_preferred_output")
    )
    rest = {k: _plain(v) for k, v in given.items() if k != "messages" and v is not None}
    if rest:
        parsed.extra["input"] = rest
    return parsed


def _preference(
    prompt: list[Message], chosen: list[Message], rejected: list[Message], used: tuple[str, ...]
) -> _Parsed:
    same = [(m["role"], m["content"].strip()) for m in chosen] == [
        (m["role"], m["content"].strip()) for m in rejected
    ]
    if same:
        raise MalformedRowError("chosen and rejected are the same reply")
    return _Parsed("preference", prompt + chosen, used, prompt, chosen, rejected)


def _prompt(value: Any, name: str) -> list[Message]:
    """A preference prompt: the user's text, or the conversation's turns before the reply."""
    return _side(value, name, "user", lambda turns: _check_prompt(turns, f"'{name}'", name))


def _reply(value: Any, name: str) -> list[Message]:
    """A preference reply: the assistant's text, or a list of turns ending with the reply."""
    return _side(value, name, "assistant", lambda turns: _check_reply(turns, name))


def _side(
    value: Any, name: str, role: str, check: Callable[[list[Message]], None]
) -> list[Message]:
    """One side of a preference row: text (one ``role`` turn), or turns that ``check`` takes."""
    if isinstance(value, str):
        if not value.strip():
            raise MalformedRowError(f"'{name}' is empty")
        return [{"role": role, "content": _text(value, f"'{name}'")}]
    if not isinstance(value, list):
        raise MalformedRowError(f"'{name}' is {_kind(value)}, not text or a list of messages")
    turns = _turns(value, name)
    check(turns)
    return turns


# ---- turns ----


def _turns(value: Any, name: str, *, sharegpt: bool = False) -> list[Message]:
    """A list of chat turns, each validated; ``name`` is the field, for the reasons."""
    if not isinstance(value, list):
        raise MalformedRowError(f"'{name}' is {_kind(value)}, not a list of turns")
    if not value:
        raise MalformedRowError(f"'{name}' is empty")
    return [_turn(item, f"{name}[{i}]", sharegpt) for i, item in enumerate(value)]


def _turn(item: Any, where: str, sharegpt: bool) -> Message:
    if not isinstance(item, dict):
        raise MalformedRowError(f"{where} is {_kind(item)}, not a turn with a role and content")
    from_value = sharegpt and (item.get("from") is not None or item.get("value") is not None)
    role_key, content_key = ("from", "value") if from_value else ("role", "content")
    given = item.get(role_key)
    if given is None:
        raise MalformedRowError(f"{where} has no {role_key!r}")
    if not isinstance(given, str):
        raise MalformedRowError(f"{where}.{role_key} is {_kind(given)}, not text")
    if from_value:
        role = _SHAREGPT_ROLES.get(given.lower())
        supported = "'human' (or 'user'), 'gpt' (or 'assistant') and 'system'"
    else:
        role = given if given in _ROLES else None
        supported = "'system', 'user' and 'assistant'"
    if role is None:
        raise MalformedRowError(
            f"{where}.{role_key} is {given!r}; only {supported} turns are supported"
        )
    if item.get("tool_calls") or item.get("function_call"):
        raise MalformedRowError(f"{where} is a tool call; only text turns are supported")
    if content_key not in item:
        raise MalformedRowError(f"{where} has no {content_key!r}")
    return {"role": role, "content": _content(item[content_key], f"{where}.{content_key}")}


def _content(value: Any, where: str) -> str:
    """A turn's text: a string, or OpenAI content parts (text only) joined by a newline."""
    if not isinstance(value, list):
        return _text(value, where)
    texts: list[str] = []
    for i, part in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise MalformedRowError(
                f"{at} is {_kind(part)}, not a content part like {{'type': 'text', 'text': ...}}"
            )
        kind = part.get("type")
        if kind not in _TEXT_PARTS:
            what = f"of type {kind!r}" if isinstance(kind, str) else "with no 'type'"
            raise MalformedRowError(f"{at} is a part {what}; only text parts are supported")
        texts.append(_text(part.get("text"), f"{at}.text"))
    return "\n".join(texts)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise MalformedRowError(f"{where} is {_kind(value)}, not text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MalformedRowError(
            f"{where} is not valid Unicode (a lone surrogate at character {e.start})"
        ) from e
    return value


def _check_conversation(turns: list[Message], name: str) -> None:
    """An SFT conversation: a user turn, and the assistant's non-empty reply last."""
    _check_reply(turns, name)
    if not any(t["role"] == "user" for t in turns):
        raise MalformedRowError(f"'{name}' has no user turn")


def _check_prompt(turns: list[Message], label: str, name: str) -> None:
    if not any(t["role"] == "user" for t in turns):
        raise MalformedRowError(f"{label} has no user turn")
    _check_filled(turns, name)


def _check_reply(turns: list[Message], name: str, offset: int = 0) -> None:
    """Turns ending with the assistant's reply; no user or assistant turn empty."""
    last = turns[-1]["role"]
    if last != "assistant":
        raise MalformedRowError(
            f"'{name}' ends with a {last} turn; the last turn must be the assistant's reply"
        )
    if not turns[-1]["content"].strip():
        raise MalformedRowError(
            f"the assistant's reply ({name}[{offset + len(turns) - 1}]) is empty"
        )
    _check_filled(turns, name, offset)


def _check_filled(turns: list[Message], name: str, offset: int = 0) -> None:
    for i, turn in enumerate(turns):
        if turn["role"] != "system" and not turn["content"].strip():
            raise MalformedRowError(f"{name}[{offset + i}] ({turn['role']}) is empty")


# ---- values ----


def _kind(value: Any) -> str:
    """What a JSON value is, in words: "a number", "text", "a list"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | decimal.Decimal):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__} value"


def _plain(value: Any) -> Any:
    """A row's value as plain JSON: Arrow's Python values converted, non-finite floats null.

    Dates and times become ISO 8601 text, decimals floats, durations seconds, bytes their UTF-8
    text (base64 when they are not UTF-8), map entries [key, value] pairs.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return _plain_text(value)
    if isinstance(value, float | decimal.Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dict):
        return {_plain_text(str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(data).decode("ascii")
    return str(value)


def _plain_text(text: str) -> str:
    """``text``, with any lone surrogate (JSON allows "\\ud800") replaced so it encodes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text
