"""The prepare step: a job's examples, deduplicated and decontaminated, ready to tag.

A generation job's examples are its usable judgments; a selection job's are the rows of the
file it imports (an uploaded object, a path under an allowed root, or a URL), each malformed
row reported with its row number. Exact and near-duplicate queries and records that overlap a
registered benchmark are dropped here, before any model is asked about them; every drop is
written to ``dropped.jsonl`` with its reason. What is kept goes to ``examples.jsonl``.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import json
import socket
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import structlog
import yarl
from aiohttp.abc import ResolveResult

from services.selector.decontam import Decontaminator, Deduplicator
from services.selector.examples import Example
from services.selector.generated import generated_examples, read_generated
from services.selector.imports import (
    Format,
    ImportFileError,
    MalformedRow,
    MalformedRowError,
    detect_format,
    iter_rows,
    read_examples,
    to_example,
)
from services.selector.spec import SelectionDefaults, selection_spec
from services.selector.workfiles import download, work_object
from taxoforge.bus import Stage
from taxoforge.datasets import DatasetStore, benchmark_object
from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.pipeline import enter_step, fail_job, publish_work
from taxoforge.service import ServiceContext
from taxoforge.store import JobKind, job_kind
from taxoforge.v1 import common_pb2 as pb

__all__ = ["Preparer", "benchmark_prompts"]

log = structlog.get_logger(__name__)

# Malformed rows shown in the report (all of them are in dropped.jsonl).
_REPORTED_ERRORS = 100
_PROMPT_KEYS = ("prompt", "question", "instruction", "query", "input", "text")


def benchmark_prompts(path: Path) -> Iterator[str]:
    """The prompts of a benchmark file: Parquet or JSON Lines rows (a conversation in any
    import shape gives its user turns; an object gives its prompt, question, instruction,
    query, input or text field; a JSON string is the prompt), or plain text, one per line."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    stripped = head.lstrip()
    if head.startswith(b"PAR1"):
        yield from _prompts(iter_rows(path, "parquet"))
    elif stripped.startswith((b"{", b'"')) or head.startswith(b"\x1f\x8b"):
        yield from _prompts(iter_rows(path, "jsonl"))
    else:
        with path.open(encoding="utf-8", errors="replace") as text:
            for line in text:
                if line.strip():
                    yield line.strip()


def _prompts(rows: Iterable[tuple[int, Any]]) -> Iterator[str]:
    for row, value in rows:
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
    contaminated: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)


def _filter(
    examples: Iterable[Example | MalformedRow | tuple[str, str]],
    job_id: str,
    dedup: Deduplicator,
    decontam: Decontaminator | None,
    out: Path,
    dropped: Path,
) -> _Tally:
    """Dedup and decontaminate a stream of examples into ``out``; drops into ``dropped``."""
    tally = _Tally()
    with out.open("w", encoding="utf-8") as kept, dropped.open("a", encoding="utf-8") as drop:

        def _drop(item: str, reason: str, **extra: Any) -> None:
            record = {"id": f"{job_id}/{item}", "item_id": item, "reason": reason, **extra}
            drop.write(json.dumps(record, ensure_ascii=False) + "\n")

        for example in examples:
            if isinstance(example, tuple):  # an item that never became an example
                _drop(example[0], example[1])
                continue
            tally.rows += 1
            if isinstance(example, MalformedRow):
                tally.malformed += 1
                if len(tally.errors) < _REPORTED_ERRORS:
                    tally.errors.append((example.row, example.reason))
                _drop(f"r{example.row:07d}", "malformed", row=example.row, detail=example.reason)
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
                examples: Iterable[Example | MalformedRow | tuple[str, str]] = read_examples(
                    source, fmt, job.source.shape or "auto", job.id
                )
            else:
                imported = None
                raw = await generated_examples(
                    self._ctx, job, report, work / "generated.jsonl", self._judge_addr
                )
                examples = read_generated(raw)
            try:
                tally = await asyncio.to_thread(
                    _filter, examples, job.id, dedup, decontam, examples_path, dropped_path
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
                # Nothing to select from. A generation job whose judged items were all
                # filtered out still succeeds, with empty datasets and the reasons.
                await self._ctx.jobs.update(job.id, _no_examples(report, tally, imported is None))
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
            added = await asyncio.to_thread(decontam.add_benchmark, name, benchmark_prompts(path))
            log.info("benchmark_loaded", benchmark=name, prompts=added)
        return decontam

    async def _materialize(self, job: pb.Job, work: Path) -> tuple[Path, pb.ImportReport]:
        """The import's file on local disk, its format and digest."""
        source = job.source
        report = pb.ImportReport(name=source.name)
        if source.path:
            path = self._defaults.allowed_path(source.path)
        else:
            path = work / "source"
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
        connector = aiohttp.TCPConnector(resolver=PublicResolver() if guard else None)
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                resp = await _get_following_redirects(session, url, guard)
                async with resp:
                    await _save(resp, url, dest, limit)
        except aiohttp.ClientError as exc:
            raise PermanentError(f"could not read {url}: {exc}") from exc


class PublicResolver(aiohttp.ThreadedResolver):
    """A resolver that gives only public addresses, so a name cannot lead inside."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await super().resolve(host, port, family)
        public = [r for r in found if ipaddress.ip_address(r["host"]).is_global]
        if not public:
            raise OSError(  # aiohttp shows an OSError's strerror in its connection error
                errno.EACCES,
                f"{host} has only private addresses; URL imports reach public hosts only "
                "(TAXOFORGE_IMPORT_PRIVATE_URLS=true allows others)",
            )
        return public


def _check_literal(url: str) -> None:
    """Refuse a URL whose host is a private IP address (the resolver never sees those)."""
    host = yarl.URL(url).host or ""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if not address.is_global:
        raise PermanentError(
            f"{url}: {host} is a private address; URL imports reach public hosts only "
            "(TAXOFORGE_IMPORT_PRIVATE_URLS=true allows others)"
        )


async def _get_following_redirects(
    session: aiohttp.ClientSession, url: str, guard: bool, hops: int = 5
) -> aiohttp.ClientResponse:
    """GET ``url``, following redirects by hand so every hop is checked like the first."""
    for _ in range(hops + 1):
        if guard:
            _check_literal(url)
        resp = await session.get(url, allow_redirects=False)
        if resp.status not in (301, 302, 303, 307, 308) or "Location" not in resp.headers:
            return resp
        url = str(resp.url.join(yarl.URL(resp.headers["Location"])))
        resp.release()
    raise PermanentError(f"{url}: more than {hops} redirects")


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


def _no_examples(report: pb.SelectionReport, tally: _Tally, generated: bool) -> Any:
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
        return fail(job)

    return _mutate
