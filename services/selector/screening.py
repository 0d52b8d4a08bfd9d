"""Screening a job's examples before any model sees them: malformed and oversized rows, exact
and near-duplicate records (query and answer; the query alone in "query" mode), and records
that overlap a registered benchmark are dropped (each written to the dropped file with its
reason); the rest are kept."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from services.selector.decontam import Decontaminator, Deduplicator
from services.selector.dropped import Dropped, drop_record
from services.selector.examples import Example
from services.selector.imports import ImportLimits, MalformedRow, TooLargeRow
from taxoforge.dedupe import words_of
from taxoforge.tokens import messages_tokens_batch

__all__ = ["Tally", "dedup_parts", "empty_reason", "screen"]

# Malformed rows shown in the report (all of them are in dropped.jsonl).
_REPORTED_ERRORS = 100
# Examples screened at once: enough to vectorise dedup's hashing and batch token counts,
# few enough that a page's texts are a small part of memory.
_PAGE = 512


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
) -> Tally:
    """Dedup and decontaminate a stream of examples into ``out``; drops into ``dropped``.

    A row over the record limit (``TooLargeRow``) is dropped as "too_large"; so is an example
    whose query and response together are over it (a generated one: an imported row is
    measured as it is read), since later steps carry them in single queue messages."""
    tally = Tally()
    with out.open("w", encoding="utf-8") as kept, dropped.open("a", encoding="utf-8") as drop:

        def _drop(item: str, reason: str, **extra: Any) -> None:
            record = drop_record(job_id, item, reason, **extra)
            drop.write(json.dumps(record, ensure_ascii=False) + "\n")

        def _page(page: list[Example | MalformedRow | Dropped]) -> list[Example]:
            # Dedup takes the page at once (its hashing is vectorised over the page); the
            # decisions and the files' order are those of one example at a time.
            fits: list[Example] = []
            for example in page:
                if isinstance(example, dict):
                    size = len(example["query"].encode()) + len(example["response"].encode())
                    if size <= max_record_bytes:
                        fits.append(example)
            # Each text's words once for dedup and decontamination both.
            memo: dict[str, list[str]] = {}

            def _words(text: str) -> list[str]:
                found = memo.get(text)
                if found is None:
                    found = memo[text] = words_of(text)
                return found

            verdicts = dedup.check_many(
                [
                    (e["item_id"], instruction, answer, context)
                    for e in fits
                    for instruction, context, answer in (dedup_parts(e),)
                ],
                _words,
            )
            verdict_of = {id(e): v for e, v in zip(fits, verdicts, strict=True)}
            fresh = [e for e, v in zip(fits, verdicts, strict=True) if v is None]
            hits = (
                decontam.check_many([[m["content"] for m in e["messages"]] for e in fresh], _words)
                if decontam is not None
                else [None] * len(fresh)
            )
            hit_of = {id(e): hit for e, hit in zip(fresh, hits, strict=True)}
            keep: list[Example] = []
            for example in page:
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
                if id(example) not in verdict_of:
                    size = len(example["query"].encode()) + len(example["response"].encode())
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
                duplicate = verdict_of[id(example)]
                if duplicate is not None:
                    reason, detail = duplicate
                    if reason == "duplicate":
                        tally.duplicates += 1
                    else:
                        tally.near_duplicates += 1
                    _drop(example["item_id"], reason, detail=detail)
                    continue
                hit = hit_of[id(example)]
                if hit is not None:
                    tally.contaminated[hit.benchmark] = tally.contaminated.get(hit.benchmark, 0) + 1
                    _drop(
                        example["item_id"],
                        "contaminated",
                        benchmark=hit.benchmark,
                        detail=f"{hit.overlap:.2f} of its n-grams, e.g. {hit.evidence!r}",
                    )
                    continue
                keep.append(example)
            return keep

        def _write(keep: list[Example]) -> None:
            # Tokens are counted for what is kept only, a page at a time, on this thread: a
            # thread counting beside it costs more in handing the GIL back and forth than it
            # saves on two cores shared with the rest of the suite.
            uncounted = [e for e in keep if e["tokens"] < 0]
            counts = messages_tokens_batch(
                [cast("list[dict[str, Any]]", e["messages"]) for e in uncounted], threads=1
            )
            for example, count in zip(uncounted, counts, strict=True):
                example["tokens"] = count
            for example in keep:
                tally.kept += 1
                kept.write(json.dumps(example, ensure_ascii=False) + "\n")

        page: list[Example | MalformedRow | Dropped] = []
        for example in examples:
            page.append(example)
            if len(page) >= _PAGE:
                _write(_page(page))
                page = []
        _write(_page(page))
    return tally


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
