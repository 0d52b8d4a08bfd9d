"""The prepare step: a job's examples, deduplicated and decontaminated, ready to tag.

A generation job's examples are its usable judgments; a selection job's are the rows of the
file it imports (an uploaded object, a path under an allowed root, or a URL), each malformed
row reported with its row number. Exact and near-duplicate queries and records that overlap a
registered benchmark are dropped here, before any model is asked about them; every drop is
written to ``dropped.jsonl`` with its reason. What is kept goes to ``examples.jsonl``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import structlog

from services.selector.decontam import Decontaminator, Deduplicator
from services.selector.dropped import Dropped, drop_record
from services.selector.examples import Example
from services.selector.generated import generated_examples, read_generated
from services.selector.imports import (
    Format,
    ImportFileError,
    ImportLimits,
    MalformedRow,
    MalformedRowError,
    TooLargeRow,
    detect_format,
    iter_rows,
    read_examples,
    read_lines,
    to_example,
)
from services.selector.spec import SelectionDefaults, selection_spec
from services.selector.workfiles import download, put_job_file, work_object
from taxoforge.bus import Stage
from taxoforge.datasets import DatasetStore, benchmark_object
from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.netguard import PublicResolver, get_following_redirects
from taxoforge.pipeline import enter_step, fail_job, publish_work
from taxoforge.service import ServiceContext
from taxoforge.store import JobKind, job_kind
from taxoforge.v1 import common_pb2 as pb

__all__ = ["Preparer", "benchmark_prompts"]

log = structlog.get_logger(__name__)

# Malformed rows shown in the report (all of them are in dropped.jsonl).
_REPORTED_ERRORS = 100
_PRIVATE_HINT = (
    "URL imports reach public hosts only (TAXOFORGE_IMPORT_PRIVATE_URLS=true allows others)"
)
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


@dataclass
class _Tally:
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


def _filter(
    examples: Iterable[Example | MalformedRow | Dropped],
    job_id: str,
    dedup: Deduplicator,
    decontam: Decontaminator | None,
    out: Path,
    dropped: Path,
    max_record_bytes: int = ImportLimits.max_record_bytes,
) -> _Tally:
    """Dedup and decontaminate a stream of examples into ``out``; drops into ``dropped``.

    A row over the record limit (``TooLargeRow``) is dropped as "too_large"; so is an example
    whose query and response together are over it (a generated one: an imported row is
    measured as it is read), since later steps carry them in single queue messages."""
    tally = _Tally()
    with out.open("w", encoding="utf-8") as kept, dropped.open("a", encoding="utf-8") as drop:

        def _drop(item: str, reason: str, **extra: Any) -> None:
            record = drop_record(job_id, item, reason, **extra)
            drop.write(json.dumps(record, ensure_ascii=False) + "\n")

        for example in examples:
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
            size = len(example["query"].encode()) + len(example["response"].encode())
            if size > max_record_bytes:
                tally.too_large += 1
                _drop(
                    example["item_id"],
                    "too_large",
                    detail=f"its query and response are {size} bytes, over the "
                    f"{max_record_bytes}-byte record limit (TAXOFORGE_IMPORT_MAX_RECORD_BYTES)",
                )
                continue
            tally.shapes[example["shape"]] = tally.shapes.get(example["shape"], 0) + 1
            duplicate = dedup.check(example["item_id"], example["query"])
            if duplicate is not None:
                reason, detail = duplicate
                if reason == "duplicate":
                    tally.duplicates += 1
                else:
                    tally.near_duplicates += 1
                _drop(example["item_id"], reason, detail=detail)
                continue
            if decontam is not None:
                text = "\n".join(m["content"] for m in example["messages"])
                hit = decontam.check(text)
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
            kept.write(json.dumps(example, ensure_ascii=False) + "\n")
    return tally


class Preparer:
    """Runs the prepare step of a job (any replica; running it again gives the same files)."""

    def __init__(self, ctx: ServiceContext, defaults: SelectionDefaults, judge_addr: str) -> None:
        self._ctx = ctx
        self._datasets = DatasetStore(ctx.bus)
        self._defaults = defaults
        self._limits = defaults.import_limits
        self._judge_addr = judge_addr

    async def run(self, job: pb.Job) -> None:
        """Write the job's examples and dropped records, report, and queue the next step."""
        spec = selection_spec(job)
        with tempfile.TemporaryDirectory(prefix="taxoforge-prepare-") as tmp:
            work = Path(tmp)
            decontam = await self._decontaminator(spec, work)
            dedup = Deduplicator(spec.near_duplicate if spec.HasField("near_duplicate") else 0.8)
            examples_path, dropped_path = work / "examples.jsonl", work / "dropped.jsonl"
            dropped_path.touch()
            report = pb.SelectionReport()
            report.CopyFrom(job.selection)
            if job_kind(job) is JobKind.SELECT:
                source, imported = await self._materialize(job, work)
                fmt = cast(Format, imported.format)
                examples: Iterable[Example | MalformedRow | Dropped] = read_examples(
                    source, fmt, job.source.shape or "auto", job.id, self._limits
                )
            else:
                imported = None
                raw = await generated_examples(
                    self._ctx, job, report, work / "generated.jsonl", self._judge_addr
                )
                examples = read_generated(raw)
            try:
                tally = await asyncio.to_thread(
                    _filter,
                    examples,
                    job.id,
                    dedup,
                    decontam,
                    examples_path,
                    dropped_path,
                    self._limits.max_record_bytes,
                )
            except ImportFileError as exc:
                raise PermanentError(f"{job.source.name or 'the file'}: {exc}") from exc
            if imported is not None:
                imported.rows, imported.imported = tally.rows, tally.rows - tally.malformed
                imported.malformed = tally.malformed
                for shape, n in tally.shapes.items():
                    imported.shapes[shape] = n
                for row, reason in tally.errors:
                    imported.errors.add(row=row, reason=reason)
                report.imported.CopyFrom(imported)
            report.duplicates, report.near_duplicates = tally.duplicates, tally.near_duplicates
            for bench, n in tally.contaminated.items():
                report.contaminated[bench] = n
            report.candidates = tally.kept
            await self._datasets.put_file(
                work_object(job.id, "examples.jsonl"), "examples", examples_path, tally.kept
            )
            await self._datasets.put_file(
                work_object(job.id, "dropped.jsonl"), "dropped", dropped_path, 0
            )
            if tally.kept == 0 and (imported is not None or report.judged == 0):
                # Nothing to select from: the job fails, with why each item was left out
                # (meta/dropped.jsonl). A generation job whose judged items were all
                # filtered out still succeeds, with empty datasets and the reasons.
                listing = await put_job_file(
                    self._datasets, job.id, "meta/dropped.jsonl", dropped_path
                )
                await self._ctx.jobs.update(
                    job.id, _no_examples(report, tally, imported is None, listing)
                )
                return
            await self._ctx.jobs.update(job.id, _with_report(report))
            if spec.cluster_by == "tags":
                await self._queue_tags(job, examples_path, tally.kept)
            else:
                await enter_step(
                    self._ctx.bus, self._ctx.jobs, job.id, Stage.PREPARE, Stage.CLUSTER
                )
        log.info("prepared", kept=tally.kept, rows=tally.rows, malformed=tally.malformed)

    async def _queue_tags(self, job: pb.Job, examples: Path, kept: int) -> None:
        """One tag task per example, then the job waits for ``kept`` tag results. Tasks go
        first: a crash halfway leaves the job at prepare, which runs again and queues the
        rest (a task queued twice is dropped by its message id)."""
        sem = asyncio.Semaphore(256)

        async def _one(task: pb.TagTask) -> None:
            async with sem:
                await publish_work(self._ctx.bus, Stage.TAG, task, job.id, task.item_id)

        batch: list[asyncio.Task[None]] = []
        for example in _iter_examples(examples):
            task = pb.TagTask(
                job_id=job.id,
                item_id=example["item_id"],
                query=example["query"],
                language=example.get("language", ""),
            )
            batch.append(asyncio.create_task(_one(task)))
            if len(batch) >= 1024:
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)
        await enter_step(
            self._ctx.bus, self._ctx.jobs, job.id, Stage.PREPARE, Stage.TAG, planned=kept
        )

    async def _decontaminator(self, spec: pb.SelectionSpec, work: Path) -> Decontaminator | None:
        if not spec.decontaminate:
            return None
        decontam = Decontaminator(spec.ngram or 10, spec.contamination_overlap)
        for name in spec.decontaminate:
            path = work / f"benchmark-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
            try:
                await download(self._datasets, benchmark_object(name), path)
            except NotFoundError as exc:
                raise PermanentError(
                    f"benchmark {name!r} is not registered; upload it with "
                    f"PUT /v1/benchmarks/{name}"
                ) from exc
            try:
                added = await asyncio.to_thread(
                    decontam.add_benchmark, name, benchmark_prompts(path, self._limits)
                )
            except ImportFileError as exc:
                raise PermanentError(f"benchmark {name!r}: {exc}") from exc
            log.info("benchmark_loaded", benchmark=name, prompts=added)
        return decontam

    async def _materialize(self, job: pb.Job, work: Path) -> tuple[Path, pb.ImportReport]:
        """The import's file on local disk, its format and digest."""
        source = job.source
        report = pb.ImportReport(name=source.name)
        if source.path:
            path = self._defaults.allowed_path(source.path)
        else:
            # Named as the tenant named it (made safe), so that what reading it says names it.
            path = work / "source" / _local_name(source.name or source.url or source.object)
            path.parent.mkdir()
            if source.url:
                await self._fetch(source.url, path)
            else:
                try:
                    await download(self._datasets, source.object, path)
                except NotFoundError as exc:
                    raise PermanentError(f"the upload {source.object!r} does not exist") from exc
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as fh:
            head = fh.read(4096)
            fh.seek(0)
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        report.sha256, report.bytes = digest.hexdigest(), size
        name = source.name or Path(source.path or source.url or source.object).name
        try:
            fmt = source.format if source.format in ("jsonl", "parquet") else None
            report.format = fmt or detect_format(name, head)
        except ImportFileError as exc:
            raise PermanentError(f"{name}: {exc}") from exc
        return path, report

    async def _fetch(self, url: str, dest: Path) -> None:
        if not self._defaults.import_urls:
            raise PermanentError("imports by URL are turned off (TAXOFORGE_IMPORT_URLS=false)")
        limit = self._defaults.import_max_bytes
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        guard = not self._defaults.import_private_urls
        resolver = PublicResolver(_PRIVATE_HINT) if guard else None
        connector = aiohttp.TCPConnector(resolver=resolver)
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                resp = await get_following_redirects(session, url, guard, hint=_PRIVATE_HINT)
                async with resp:
                    await _save(resp, url, dest, limit)
        except aiohttp.ClientError as exc:
            raise PermanentError(f"could not read {url}: {exc}") from exc


async def _save(resp: aiohttp.ClientResponse, url: str, dest: Path, limit: int) -> None:
    if resp.status >= 400:
        raise PermanentError(f"GET {url} answered {resp.status} {resp.reason}")
    size = 0
    with dest.open("wb") as fh:
        async for chunk in resp.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > limit:
                raise PermanentError(f"{url} is larger than TAXOFORGE_IMPORT_MAX_BYTES ({limit})")
            fh.write(chunk)


def _local_name(name: str) -> str:
    """A file name for the import's local copy: the last part of ``name``, safe characters."""
    last = name.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", last)[-100:]
    return base.lstrip(".") or "source"


def _iter_examples(path: Path) -> Iterator[Example]:
    with path.open("rb") as fh:
        for line in fh:
            yield json.loads(line)


def _with_report(report: pb.SelectionReport) -> Any:
    def _mutate(job: pb.Job) -> bool:
        if job.state != pb.JOB_STATE_SELECTING or job.phase != Stage.PREPARE.value:
            return False
        job.selection.CopyFrom(report)
        return True

    return _mutate


def _no_examples(
    report: pb.SelectionReport, tally: _Tally, generated: bool, listing: pb.DatasetInfo
) -> Any:
    if generated and report.judged == 0:
        top = report.failure_reasons[0] if report.failure_reasons else None
        reason = "every item failed" + (f"; most often at {top.stage}: {top.reason}" if top else "")
    elif tally.rows == 0:
        reason = "the file holds no rows"
    elif tally.malformed == tally.rows:
        shown = "; ".join(f"row {row}: {why}" for row, why in tally.errors[:3])
        reason = f"none of its {tally.rows} rows could be imported ({shown})"
    else:
        reason = "nothing is left after dedup and decontamination"
    fail = fail_job(reason if generated and report.judged == 0 else f"nothing to select: {reason}")

    def _mutate(job: pb.Job) -> bool:
        job.selection.CopyFrom(report)
        del job.datasets[:]
        job.datasets.append(listing)
        return fail(job)

    return _mutate
