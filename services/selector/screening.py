"""Screening a job's examples before any model sees them: malformed and oversized rows, exact
and near-duplicate records (query and answer; the query alone in "query" mode), and records
that overlap a registered benchmark are dropped (each written to the dropped file with its
reason); the rest are kept."""

from __future__ import annotations

import json
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import structlog

from services.selector.decontam import (
    Contamination,
    Decontaminator,
    DedupFeatures,
    Deduplicator,
    Record,
)
from services.selector.dropped import Dropped, drop_record
from services.selector.examples import Example
from services.selector.imports import ImportLimits, MalformedRow, TooLargeRow
from taxoforge import jsonl
from taxoforge.dedupe import WordMemo
from taxoforge.tokens import messages_tokens_batch

__all__ = ["Tally", "dedup_parts", "empty_reason", "screen"]

log = structlog.get_logger(__name__)

# Malformed rows shown in the report (all of them are in dropped.jsonl).
_REPORTED_ERRORS = 100
# Examples screened at once: enough to vectorise dedup's hashing and batch token counts,
# few enough that a page's texts are a small part of memory.
_PAGE = 512
# Rows read before the contamination check and token counts move to a worker process (a
# small job is done before a process would have started), and pages checked ahead there.
_OFFLOAD_AFTER_ROWS = 8192
_IN_FLIGHT = 4
_WORKERS = 2


@dataclass
class Tally:
    """What preparing found, for the report."""

    rows: int = 0
    kept: int = 0
    malformed: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    # Examples over the record limit (rows over it are among the malformed: never read).
    too_large: int = 0
    contaminated: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)


def screen(
    examples: Iterable[Example | MalformedRow | Dropped],
    job_id: str,
    dedup: Deduplicator,
    decontam: Decontaminator | None,
    out: Path,
    dropped: Path,
    max_record_bytes: int = ImportLimits.max_record_bytes,
    offload_after_rows: int = _OFFLOAD_AFTER_ROWS,
    on_kept: Callable[[Example], object] | None = None,
    count_tokens: bool = True,
) -> Tally:
    """Dedup and decontaminate a stream of examples into ``out``; drops into ``dropped``.

    A row over the record limit (``TooLargeRow``) is dropped as "too_large"; so is an example
    whose query and response together are over it (a generated one: an imported row is
    measured as it is read), since later steps carry them in single queue messages.

    Dedup decides in order (each example against the ones kept before it), here. All that
    needs no order (each example's words, shingle hashes and MinHash bands, its contamination
    check and its token count) moves to a worker process once ``offload_after_rows`` rows
    have been read (0: at once; a small job never starts one), so a large import screens on
    two cores: while the worker hashes a page, this thread reads the next ones and decides the
    one before. The files are the same either way.

    ``on_kept`` is called with each example kept, in the file's order, once it is written.

    ``count_tokens``: count the tokens of each example kept that has no count yet (-1). A
    selection whose budget is in records needs the counts of the records it picks only
    (``examples.count_tokens_of`` counts them then): counting 100k long rows here is about a
    third of the work screening does.
    """
    tally = Tally()
    pending: deque[_Page] = deque()
    with (
        out.open("wb") as kept,  # the workers' lines come encoded
        dropped.open("a", encoding="utf-8") as drop,
        _Checks(dedup, decontam, count_tokens) as checks,
    ):

        def _drop(item: str, reason: str, **extra: Any) -> None:
            record = drop_record(job_id, item, reason, **extra)
            drop.write(json.dumps(record, ensure_ascii=False) + "\n")

        def _read(rows: list[Example | MalformedRow | Dropped]) -> _Page:
            fits: list[Example] = []
            for example in rows:
                if isinstance(example, dict) and _fits(example, max_record_bytes):
                    fits.append(example)
            return _Page(rows, fits, checks.submit(fits))

        def _write(page: _Page) -> None:
            # Dedup's decisions and the files' order are those of one example at a time.
            features, hits, counts, lines = page.checked.result()
            verdicts = dedup.decide([e["item_id"] for e in page.fits], features)
            # Each example that fit: its dedup verdict, its contamination and its line.
            checked = {
                id(e): (verdict, hit, line)
                for e, verdict, hit, line in zip(page.fits, verdicts, hits, lines, strict=True)
            }
            for fit, count in zip(page.fits, counts, strict=True):
                if count >= 0:
                    fit["tokens"] = count
            for example in page.rows:
                if isinstance(example, Dropped):  # an item that never became an example
                    drop.write(json.dumps(example.record(job_id), ensure_ascii=False) + "\n")
                    continue
                tally.rows += 1
                if isinstance(example, MalformedRow):
                    tally.malformed += 1
                    if len(tally.errors) < _REPORTED_ERRORS:
                        tally.errors.append((example.row, example.reason))
                    reason = "too_large" if isinstance(example, TooLargeRow) else "malformed"
                    _drop(f"r{example.row:07d}", reason, row=example.row, detail=example.reason)
                    continue
                if id(example) not in checked:
                    size = _record_bytes(example)
                    tally.too_large += 1
                    _drop(
                        example["item_id"],
                        "too_large",
                        detail=f"its query and response are {size} bytes, over the "
                        f"{max_record_bytes}-byte record limit "
                        "(TAXOFORGE_IMPORT_MAX_RECORD_BYTES)",
                    )
                    continue
                tally.shapes[example["shape"]] = tally.shapes.get(example["shape"], 0) + 1
                duplicate, hit, line = checked[id(example)]
                if duplicate is not None:
                    reason, detail = duplicate
                    if reason == "duplicate":
                        tally.duplicates += 1
                    else:
                        tally.near_duplicates += 1
                    _drop(example["item_id"], reason, detail=detail)
                    continue
                if hit is not None:
                    tally.contaminated[hit.benchmark] = tally.contaminated.get(hit.benchmark, 0) + 1
                    _drop(
                        example["item_id"],
                        "contaminated",
                        benchmark=hit.benchmark,
                        detail=f"{hit.overlap:.2f} of its n-grams, e.g. {hit.evidence!r}",
                    )
                    continue
                tally.kept += 1
                kept.write(line)
                if on_kept is not None:
                    on_kept(example)

        def _next(rows: list[Example | MalformedRow | Dropped], read: int) -> None:
            if read >= offload_after_rows and not checks.offloaded:
                checks.offload()
            pending.append(_read(rows))
            # A page is decided and written once the worker has it hashed and checked; a few
            # stay in flight so that the worker always has the next one.
            while len(pending) > (_IN_FLIGHT if checks.offloaded else 0):
                _write(pending.popleft())

        rows: list[Example | MalformedRow | Dropped] = []
        read = 0  # rows before this page
        for example in examples:
            rows.append(example)
            if len(rows) >= _PAGE:
                _next(rows, read)
                rows, read = [], read + len(rows)
        _next(rows, read)
        while pending:
            _write(pending.popleft())
    return tally


@dataclass
class _Page:
    """A page read, waiting for its checks: its rows in order, the examples within the record
    limit, and what the worker makes of them (dedup features, contamination, tokens)."""

    rows: list[Example | MalformedRow | Dropped]
    fits: list[Example]
    checked: Future[_Checked]


# A page's dedup features, each example's contamination (None: clean), token count (-1: it
# had one) and JSON line as the work file holds it (its count in it).
_Checked = tuple[DedupFeatures, list["Contamination | None"], list[int], list[bytes]]


def _record_bytes(example: Example) -> int:
    """The UTF-8 bytes of an example's query and response."""
    return len(example["query"].encode()) + len(example["response"].encode())


def _fits(example: Example, limit: int) -> bool:
    """Whether an example's query and response are at most ``limit`` bytes, encoded only when
    their length in characters cannot tell (a character is one to four bytes)."""
    chars = len(example["query"]) + len(example["response"])
    if chars * 4 <= limit:
        return True
    if chars > limit:
        return False
    return _record_bytes(example) <= limit


def _record(example: Example) -> Record:
    """What dedup compares of an example, as its record."""
    instruction, context, answer = dedup_parts(example)
    return example["item_id"], instruction, answer, context


class _Checks:
    """What screening needs of each page that takes no order (dedup features, contamination,
    token counts), a page at a time: on this thread, or, once ``offload`` is called, in a
    worker process (spawned: the selector runs threads, which a forked child would inherit in
    an unknown state)."""

    def __init__(
        self, dedup: Deduplicator, decontam: Decontaminator | None, count_tokens: bool = True
    ) -> None:
        self._settings = (dedup.near_threshold, dedup.mode)
        self._dedup = dedup
        self._decontam = decontam
        self._count_tokens = count_tokens
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Checks:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def offloaded(self) -> bool:
        return self._pool is not None

    def offload(self) -> None:
        log.info("screening_worker_started")
        self._pool = ProcessPoolExecutor(
            max_workers=_WORKERS,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self._settings, self._decontam, self._count_tokens),
        )

    def submit(self, fits: list[Example]) -> Future[_Checked]:
        if self._pool is not None:
            return self._pool.submit(_check, fits)
        done: Future[_Checked] = Future()
        done.set_result(_check_with(self._dedup, self._decontam, self._count_tokens, fits))
        return done


# The worker process's dedup (for its features: settings only, no index) and decontaminator
# (its benchmarks' n-gram hashes), sent once.
_WORKER: tuple[Deduplicator, Decontaminator | None, bool] | None = None


def _init_worker(
    dedup: tuple[float, str], decontam: Decontaminator | None, count_tokens: bool
) -> None:
    global _WORKER
    _WORKER = (Deduplicator(*dedup), decontam, count_tokens)


def _check(fits: list[Example]) -> _Checked:
    if _WORKER is None:
        raise RuntimeError("the screening worker was not initialised")
    return _check_with(*_WORKER, fits)


def _check_with(
    dedup: Deduplicator, decontam: Decontaminator | None, count_tokens: bool, fits: list[Example]
) -> _Checked:
    """What screening needs of a page of examples that takes no order: their dedup features,
    each text's contamination (None: clean), each conversation's tokens (-1 where the example
    had its count already, or without ``count_tokens``), and each example's line of the work
    file, written here (the deciding thread only writes the lines it keeps). The words of
    every text are split and hashed once for dedup and contamination. Tokens are counted on
    the calling thread: beside another busy thread, handing the GIL back and forth costs more
    than a tokenizer thread saves."""
    words = WordMemo()
    features = dedup.features([_record(e) for e in fits], words)
    hits: list[Contamination | None] = [None] * len(fits)
    if decontam is not None:
        hits = decontam.check_many([[m["content"] for m in e["messages"]] for e in fits], words)
    wanted = [count_tokens and e["tokens"] < 0 for e in fits]
    uncounted = [
        cast("list[dict[str, Any]]", e["messages"]) for e, w in zip(fits, wanted, strict=True) if w
    ]
    counts = iter(messages_tokens_batch(uncounted, threads=1))
    tokens = [next(counts) if w else -1 for w in wanted]
    lines: list[bytes] = []
    for example, count in zip(fits, tokens, strict=True):
        if count >= 0:
            example["tokens"] = count  # the caller's copy is counted too, from ``tokens``
        lines.append(jsonl.line(example))
    return features, hits, tokens, lines


def dedup_parts(example: Example) -> tuple[str, str, str]:
    """What dedup compares of an example: its instruction (the query without the input it is
    about, when the row gives that apart), that input, and its answer (a preference row's
    rejected reply too: two rows that prefer the same reply to different ones differ)."""
    query, context = example["query"], example.get("context", "")
    instruction = query
    if context and query.endswith(context):
        instruction = query[: len(query) - len(context)].rstrip()
    else:
        context = ""
    answer = example["response"]
    rejected = example.get("rejected")
    if rejected:
        answer += "\n\n" + "\n\n".join(m["content"] for m in rejected)
    return instruction, context, answer


def empty_reason(tally: Tally) -> str:
    """Why screening kept nothing from an import (or from a job whose items all came through)."""
    if tally.rows == 0:
        return "the file holds no rows"
    if tally.malformed == tally.rows:
        shown = "; ".join(f"row {row}: {why}" for row, why in tally.errors[:3])
        return f"none of its {tally.rows} rows could be imported ({shown})"
    return "nothing is left after dedup and decontamination"
