"""The prepare step: a job's examples, deduplicated and decontaminated, ready to tag.

This module moves the job and publishes; what it runs is pure: the import's formats
(``imports``), the guarded fetch (``fetch``), and dedup and decontamination (``screening``).

A generation job's examples are its usable judgments; a selection job's are the rows of the
file it imports (an uploaded object, a path under an allowed root, or a URL), each malformed
row reported with its row number. Exact and near-duplicate queries and records that overlap a
registered benchmark are dropped here, before any model is asked about them; every drop is
written to ``dropped.jsonl`` with its reason. What is kept goes to ``examples.jsonl``.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import structlog

from services.selector.benchmarks import benchmark_prompts
from services.selector.decontam import Decontaminator, Deduplicator
from services.selector.dropped import Dropped
from services.selector.examples import Example
from services.selector.fetch import fetch_url, local_name
from services.selector.generated import generated_examples, read_generated
from services.selector.imports import (
    Format,
    ImportFileError,
    MalformedRow,
    detect_format,
    read_examples,
)
from services.selector.screening import Tally, empty_reason, screen
from services.selector.spec import SelectionDefaults, selection_spec
from services.selector.tagging import TagPager
from services.selector.workfiles import download, put_job_file, work_object
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext
from taxoforge.datasets import DatasetStore, benchmark_object
from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.jobs.lifecycle import fail_job, record_report
from taxoforge.jobs.model import JobKind, job_kind
from taxoforge.pipeline import enter_step, publish_work
from taxoforge.v1 import common_pb2 as pb

__all__ = ["Preparer"]

log = structlog.get_logger(__name__)

# Tag pages published at once while queueing a job's examples.
_PUBLISHERS = 16


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
            try:
                dedup = Deduplicator(
                    spec.near_duplicate if spec.HasField("near_duplicate") else 0.8, spec.dedup
                )
            except ValueError as exc:  # a recipe that did not come through the gateway
                raise PermanentError(f"selection: {exc}") from exc
            examples_path, dropped_path = work / "examples.jsonl", work / "dropped.jsonl"
            dropped_path.touch()
            report = pb.SelectionReport()
            report.CopyFrom(job.selection)
            if job_kind(job) is JobKind.SELECT:
                source, imported = await self._materialize(job, work)
                fmt = cast(Format, imported.format)
                examples: Iterable[Example | MalformedRow | Dropped] = read_examples(
                    source,
                    fmt,
                    job.source.shape or "auto",
                    job.id,
                    self._limits,
                    count_tokens=False,  # screen counts what it keeps, a page at a time
                )
            else:
                imported = None
                raw = await generated_examples(
                    self._ctx, job, report, work / "generated.jsonl", self._judge_addr
                )
                examples = read_generated(raw)
            # Tag pages are made as examples are kept, not read back from the work file.
            pages: list[pb.TagPage] = []
            pager = TagPager(job.id) if spec.cluster_by == "tags" else None

            def _page(example: Example) -> None:
                assert pager is not None
                page = pager.add(example)
                if page is not None:
                    pages.append(page)

            try:
                tally = await asyncio.to_thread(
                    screen,
                    examples,
                    job.id,
                    dedup,
                    decontam,
                    examples_path,
                    dropped_path,
                    self._limits.max_record_bytes,
                    self._defaults.screen_worker_after_rows,
                    _page if pager is not None else None,
                    # Every count only for a budget in tokens; else the select step counts
                    # the records the methods pick.
                    spec.budget_unit == "tokens",
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
            await record_report(self._ctx.jobs, job.id, Stage.PREPARE, report)
            if pager is not None:
                last = pager.close()
                await self._queue_tags(job, pages + ([last] if last is not None else []))
            else:
                await enter_step(
                    self._ctx.bus, self._ctx.jobs, job.id, Stage.PREPARE, Stage.CLUSTER
                )
        log.info("prepared", kept=tally.kept, rows=tally.rows, malformed=tally.malformed)

    async def _queue_tags(self, job: pb.Job, pages: Iterable[pb.TagPage]) -> None:
        """The examples' tag pages, then the job waits for one result per page. Pages go
        first: a crash halfway leaves the job at prepare, which runs again and queues the
        same pages (a page queued twice is dropped by its message id)."""
        pages = iter(pages)
        queued = 0

        # A fixed pool of publishers drawing from one iterator: a few publishes in flight,
        # with no task nor semaphore per page.
        async def _publisher() -> None:
            nonlocal queued
            for page in pages:
                await publish_work(self._ctx.bus, Stage.TAG, page, job.id, page.item_id)
                queued += 1

        publishers = [asyncio.create_task(_publisher()) for _ in range(_PUBLISHERS)]
        try:
            await asyncio.gather(*publishers)
        except BaseException:
            for publisher in publishers:  # a failed publish stops the rest: prepare reruns
                publisher.cancel()
            raise
        await enter_step(
            self._ctx.bus, self._ctx.jobs, job.id, Stage.PREPARE, Stage.TAG, planned=queued
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
            path = work / "source" / local_name(source.name or source.url or source.object)
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
        await fetch_url(
            url, dest, self._defaults.import_max_bytes, self._defaults.import_private_urls
        )


def _no_examples(
    report: pb.SelectionReport, tally: Tally, generated: bool, listing: pb.DatasetInfo
) -> Any:
    if generated and report.judged == 0:
        top = report.failure_reasons[0] if report.failure_reasons else None
        reason = "every item failed" + (f"; most often at {top.stage}: {top.reason}" if top else "")
    else:
        reason = empty_reason(tally)
    fail = fail_job(reason if generated and report.judged == 0 else f"nothing to select: {reason}")

    def _mutate(job: pb.Job) -> bool:
        job.selection.CopyFrom(report)
        del job.datasets[:]
        job.datasets.append(listing)
        return fail(job)

    return _mutate
