"""The select step: the job's method picks records for its budget, the other methods are
measured on the same candidates, and the datasets, provenance and dataset card are written.

Examples are read twice from the work file, never held whole: once as small candidates to
select from, then line by line (by byte offset, in the order written) into the exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from numpy.typing import NDArray

from services.selector.card import CardInput, write_card
from services.selector.cells import count_delivered, fit_cells, item_cell, quotas_of
from services.selector.choice import (
    Comparisons,
    apply_clusters,
    apply_comparisons,
    choose,
    explain,
    export_order,
    methods_of,
    not_kept,
    provenance,
)
from services.selector.clustering import embed_all, embedder_of
from services.selector.dropped import drop_record, iter_drops
from services.selector.examples import (
    Candidate,
    Example,
    Loaded,
    count_tokens_of,
    load_examples,
)
from services.selector.exports import ExportWriter
from services.selector.generated import tagging_usage
from services.selector.report import add_comparisons, paid_usage
from services.selector.spec import selection_spec
from services.selector.workfiles import download, put_job_file, stored_composition
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext
from taxoforge.datasets import DatasetStore, work_object
from taxoforge.errors import TransientError
from taxoforge.jobs.lifecycle import fail, succeed
from taxoforge.jobs.model import JobKind, job_kind
from taxoforge.llm.metering import add_usage
from taxoforge.protojson import to_dict
from taxoforge.store import ItemKind
from taxoforge.v1 import common_pb2 as pb

__all__ = ["DEITA_MAX_TOKENS", "SelectionRunner", "deita_texts"]

log = structlog.get_logger(__name__)

# DEITA's diversity is judged on the instruction alone, cut at MiniLM's training length: a
# long answer added little to the vector but cost ~10x the encoder's time.
DEITA_MAX_TOKENS = 128


def deita_texts(cands: list[Candidate], rows: list[int]) -> list[str]:
    """What DEITA embeds of each candidate asked for: its instruction (query)."""
    return [cands[i].query for i in rows]


@dataclass
class _Written:
    """The files of the job's folder, and the ids of every item they keep or drop."""

    files: list[Path]
    accounted: set[str]


class SelectionRunner:
    """Selects a job's records and writes its datasets; running it twice gives the same files."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._datasets = DatasetStore(ctx.bus)

    async def run(self, job: pb.Job) -> tuple[list[pb.DatasetInfo], pb.SelectionReport]:
        """Select and write; the job ends SUCCEEDED with its datasets and report."""
        spec = selection_spec(job)
        report = pb.SelectionReport()
        report.CopyFrom(job.selection)
        # Read while the step's threads load, choose and write (the tag step has ended).
        tagging = asyncio.create_task(tagging_usage(self._ctx, job.id), name="tagging-usage")
        try:
            return await self._run(job, spec, report, tagging)
        finally:
            tagging.cancel()  # a no-op once it is done; its error is then read here
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await tagging

    async def _run(
        self,
        job: pb.Job,
        spec: pb.SelectionSpec,
        report: pb.SelectionReport,
        tagging: asyncio.Task[pb.Usage],
    ) -> tuple[list[pb.DatasetInfo], pb.SelectionReport]:
        with tempfile.TemporaryDirectory(prefix="taxoforge-select-") as tmp:
            work = Path(tmp)
            examples_path = work / "examples.jsonl"
            await download(self._datasets, work_object(job.id, "examples.jsonl"), examples_path)
            loaded = await asyncio.to_thread(load_examples, examples_path)
            cands = loaded.candidates
            plan = await self._clusters(job.id, work, cands)
            comparisons = await self._comparisons(job.id, cands)
            tacos = report.tacos
            tacos.comparisons = len(comparisons.by_item) - comparisons.failed
            tacos.comparison_failures = comparisons.failed
            tacos.judge_calls = comparisons.calls
            # TACOS's judge calls are the job's judge's too (a generation job's health
            # holds its item judging already).
            add_comparisons(report.judge, comparisons.by_item.values())
            tacos.unscored = sum(c.quality is None for c in cands)

            embedded: list[int] = []  # texts embedded per block DEITA reached
            embeddings = (
                self._deita_embedder(job, cands, embedded) if "deita" in methods_of(spec) else None
            )
            count = functools.partial(count_tokens_of, examples_path, loaded)
            choice = await asyncio.to_thread(choose, spec, cands, embeddings, count)
            for m in choice.measures:
                report.methods.add(
                    method=m.method,
                    records=m.records,
                    tokens=m.tokens,
                    mean_quality=m.mean_quality or 0.0,
                    unscored=m.unscored,
                    clusters_covered=m.clusters,
                    tags_covered=m.tags,
                    mean_response_chars=m.mean_response_chars,
                    chosen=m.method == spec.method,
                )
            chosen, quota_by_cluster = choice.chosen, choice.quota_by_cluster
            composition = await self._composition(job)
            left: dict[int, str] = {}
            if composition is not None:  # the plan's cells, each kept at its quota
                chosen, left = fit_cells(
                    chosen, cands, quotas_of(composition), composition.preference_promised
                )
                count_delivered(composition, chosen, cands)  # before the card is written
                report.composition.CopyFrom(composition)
                report.composition.ClearField("item_cells")  # the drops' lines carry them
            report.method = spec.method
            report.selected = len(chosen)
            await asyncio.to_thread(count, chosen)  # those a plan's cells added
            report.selected_tokens = sum(cands[i].tokens for i in chosen)
            report.over_budget = len(cands) - len(chosen)
            for info in report.clusters:
                quota, selected = quota_by_cluster.get(info.id, (0, 0))
                info.quota, info.selected = quota, selected

            out = work / "out"
            prepared = work / "prepared-dropped.jsonl"
            await download(self._datasets, work_object(job.id, "dropped.jsonl"), prepared)
            written = await asyncio.to_thread(
                self._write,
                job,
                spec,
                examples_path,
                loaded,
                chosen,
                plan,
                comparisons,
                quota_by_cluster,
                left,
                report,
                prepared,
                out,
                composition,
            )
            await self._account(
                job, report, written.accounted, out / "meta" / "dropped.jsonl", composition
            )
            # Generation's usage, then every recorded selection call's: tags and comparisons.
            add_usage(report.usage, await tagging)
            add_usage(
                report.usage,
                paid_usage(call for c in comparisons.by_item.values() for call in c.calls),
            )
            datasets = [
                await put_job_file(self._datasets, job.id, f.relative_to(out).as_posix(), f)
                for f in written.files
            ]

        if job_kind(job) is JobKind.GENERATE and report.sft_records == 0:
            # Nothing delivered is not a success; the folder still says why for every item.
            await fail(
                self._ctx.jobs,
                job.id,
                "delivered no records; meta/dropped.jsonl gives each item's reason",
                datasets=datasets,
                selection=report,
            )
            return datasets, report
        short = composition is not None and composition.short
        await succeed(self._ctx.jobs, job.id, datasets=datasets, selection=report, short=short)
        log.info(
            "job_selected",
            method=spec.method,
            candidates=len(cands),
            selected=report.selected,
            sft=report.sft_records,
            preference=report.preference_records,
            deita_embedded=sum(embedded),
        )
        return datasets, report

    async def _composition(self, job: pb.Job) -> pb.Composition | None:
        """A generation job's plan cells and what generation delivered (its review wrote
        them); None for selection jobs."""
        if job_kind(job) is not JobKind.GENERATE:
            return None
        return await stored_composition(self._ctx.bus, job.id)

    async def _clusters(self, job_id: str, work: Path, cands: list[Candidate]) -> dict[str, Any]:
        """clusters.json, applied to the candidates (cluster and tags)."""
        path = work / "clusters.json"
        await download(self._datasets, work_object(job_id, "clusters.json"), path)
        # Parsing and applying 100k candidates' plan takes a while: off the event loop.
        return await asyncio.to_thread(_read_clusters, path, cands)

    async def _comparisons(self, job_id: str, cands: list[Candidate]) -> Comparisons:
        """The job's comparisons, applied to the candidates (see ``apply_comparisons``)."""
        stored = [c async for c in self._ctx.items.scan(job_id, ItemKind.COMPARISON, pb.Comparison)]
        out = apply_comparisons(cands, stored)
        expected = await self._ctx.items.count(job_id, ItemKind.COMPARISON)
        if len(out.by_item) < expected:  # a scan that ended early: read again
            raise TransientError(f"read {len(out.by_item)} of {expected} comparisons; again")
        return out

    def _deita_embedder(
        self, job: pb.Job, cands: list[Candidate], embedded: list[int]
    ) -> Callable[[NDArray[np.int64]], NDArray[np.float32]]:
        """DEITA's vectors on demand: its walk (run in a worker thread) asks for one block of
        candidates at a time, best first, and stops at the budget, so only what it reaches is
        embedded (on 100k candidates most never are), and only the instructions, truncated
        (see ``deita_texts``)."""
        loop = asyncio.get_running_loop()
        embedder = embedder_of(job, self._ctx.llm.registry, "deita", DEITA_MAX_TOKENS)

        def embed(rows: NDArray[np.int64]) -> NDArray[np.float32]:
            texts = deita_texts(cands, rows.tolist())
            vectors: NDArray[np.float32] = asyncio.run_coroutine_threadsafe(
                embed_all(embedder, texts), loop
            ).result()
            embedded.append(len(texts))
            return vectors

        return embed

    def _write(
        self,
        job: pb.Job,
        spec: pb.SelectionSpec,
        examples_path: Path,
        loaded: Loaded,
        chosen: list[int],
        plan: dict[str, Any],
        comparisons: Comparisons,
        quota_by_cluster: dict[int, tuple[int, int]],
        left: dict[int, str],
        report: pb.SelectionReport,
        prepared_drops: Path,
        out: Path,
        plan_cells: pb.Composition | None = None,
    ) -> _Written:
        """Exports, provenance, every drop (the prepare step's, then this step's) and the card,
        under ``out``; provenance and drops are written even when empty. A generation item's
        drop names its plan cell (``plan_cells``), whatever stage it left at."""
        cands = loaded.candidates
        accounted: set[str] = set()
        labels: list[str] = plan["labels"]
        references: list[str] = plan["references"]
        kept = explain(spec.method, chosen, cands, labels, quota_by_cluster)
        order = export_order(chosen, cands)
        composition: dict[str, Counter[str]] = {
            k: Counter() for k in ("taxonomy node", "language", "difficulty", "cluster", "shape")
        }
        languages: Counter[str] = Counter()
        with ExportWriter(out, spec.exports) as writer, examples_path.open("rb") as fh:
            writer.open_extra("provenance")
            writer.open_extra("dropped")
            # Malformed, duplicate, contaminated, failed and unusable items go first.
            for drop in iter_drops(prepared_drops, job.id):
                cell = item_cell(plan_cells, drop["item_id"])
                writer.write_extra(
                    "dropped", drop | {k: v for k, v in cell.items() if k not in drop}
                )
                if "candidate" not in drop:  # a discarded draft or candidate, not its item
                    accounted.add(drop["item_id"])
            for i in order:
                fh.seek(loaded.offsets[i])
                example: Example = json.loads(fh.readline())
                writer.write(example)
                cand = cands[i]
                accounted.add(cand.item_id)
                label = labels[cand.cluster] if 0 <= cand.cluster < len(labels) else ""
                writer.write_extra(
                    "provenance",
                    provenance(example, cand, label, references, comparisons, kept[i]),
                )
                for key, value in (
                    ("taxonomy node", example.get("node", "")),
                    ("language", example.get("language", "")),
                    ("difficulty", example.get("difficulty", "")),
                    ("cluster", label),
                    ("shape", example["shape"]),
                ):
                    if value:
                        composition[key][value] += 1
                if example.get("language"):
                    languages[example.get("language", "")] += 1
            selected = set(chosen)
            for i, cand in enumerate(cands):
                if i not in selected:
                    detail = left.get(i) or not_kept(
                        spec.method, i, cands, labels, quota_by_cluster
                    )
                    cell = item_cell(plan_cells, cand.item_id)
                    writer.write_extra(
                        "dropped",
                        drop_record(job.id, cand.item_id, "not_selected", detail=detail, **cell),
                    )
                    accounted.add(cand.item_id)
            if job_kind(job) is JobKind.GENERATE:  # judged items whose candidates gave no pair
                report.ties = sum(not c.has_preference for c in cands)
        files = writer.close()
        written = {(f.kind, f.format): f.records for f in files}
        report.sft_records = written.get(("sft", "jsonl"), 0)
        report.preference_records = written.get(("preference", "jsonl"), 0)
        card = CardInput(
            job_id=job.id,
            name=job.recipe.name or job.id,
            license=spec.license,
            languages=sorted(languages),
            method=spec.method,
            files=files,
            composition={k: v for k, v in composition.items() if v},
            cluster_sizes=Counter(labels[c.cluster] for c in cands if 0 <= c.cluster < len(labels)),
            selected_quality=[q for i in chosen if (q := cands[i].quality) is not None],
            candidate_quality=[q for c in cands if (q := c.quality) is not None],
            settings={"selection": to_dict(spec), "recipe": _recipe_settings(job.recipe)},
            report=to_dict(report),
        )
        card_paths = write_card(out, card)
        return _Written([f.path for f in files] + [out / p for p in card_paths], accounted)

    async def _account(
        self,
        job: pb.Job,
        report: pb.SelectionReport,
        accounted: set[str],
        dropped: Path,
        composition: pb.Composition | None = None,
    ) -> None:
        """Every planned item ends kept or dropped. The prepare step's drops and the examples
        cover them all; should an item be missing anyway, it is listed rather than lost."""
        if job_kind(job) is not JobKind.GENERATE:
            # Row numbers skip blank lines, so a missing row can be counted, not named.
            if len(accounted) < report.imported.rows:
                log.error("rows_unaccounted", rows=report.imported.rows, listed=len(accounted))
            return
        if len(accounted) >= job.planned:
            return
        missing: list[dict[str, Any]] = []
        async for outcome in self._ctx.items.scan(job.id, ItemKind.OUTCOME, pb.ItemOutcome):
            if outcome.item_id not in accounted:
                stage = outcome.failed_stage or Stage.SELECT.value
                detail = "not among the step's examples or the prepare step's drops"
                cell = item_cell(composition, outcome.item_id)
                missing.append(
                    drop_record(job.id, outcome.item_id, "failed", stage, detail=detail, **cell)
                )
        if missing:
            log.error("items_unaccounted", items=len(missing), planned=job.planned)
            with dropped.open("a", encoding="utf-8") as fh:
                for record in missing:
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _read_clusters(path: Path, cands: list[Candidate]) -> dict[str, Any]:
    plan: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    apply_clusters(cands, plan)
    return plan


def _recipe_settings(recipe: pb.Recipe) -> dict[str, Any]:
    settings = to_dict(recipe)
    settings.get("judging", {}).pop("golden", None)
    settings.pop("selection", None)
    return settings
