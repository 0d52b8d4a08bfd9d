"""The cluster step: tags normalized, examples clustered, a reference chosen per cluster, and
the comparisons comparative scoring may spend planned and queued for the judge.

Its result, ``clusters.json``, is what the select step reads: each item's cluster and
normalized tags, each cluster's label and reference, and the items that were compared.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import structlog

from services.selector.cluster_plan import (
    SPARE_CALLS,
    ClusterPlan,
    comparison_calls,
    comparison_plan,
)
from services.selector.examples import Candidate, Loaded, examples_at, load_examples
from services.selector.methods.clusters import (
    ClusterResult,
    auto_clusters,
    cluster_by_key,
    cluster_by_tags,
    cluster_by_vectors,
    references,
)
from services.selector.spec import selection_spec
from services.selector.tag_vectors import TagPrefetch
from services.selector.workfiles import download, work_object
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext
from taxoforge.datasets import DatasetStore
from taxoforge.embeddings import (
    LOCAL_MODEL,
    Embedder,
    Use,
    embedder_for,
    release_local_models,
)
from taxoforge.errors import TransientError
from taxoforge.jobs.lifecycle import record_report
from taxoforge.labels import normalize_labels
from taxoforge.llm.endpoints import ModelRegistry
from taxoforge.pipeline import enter_step, publish_work
from taxoforge.store import ItemKind
from taxoforge.v1 import common_pb2 as pb

__all__ = ["Clusterer", "embed_all", "embedder_of"]

log = structlog.get_logger(__name__)

_REPORTED_LABELS = 50
# Why queries went untagged: the most common reasons, each cut to its first line's start.
_REPORTED_REASONS = 5
_REASON_CHARS = 200
_PAGE_FAILED = "its page of queries was given up on (see the job's failures at tag)"
_EMBED_BATCH = 256


def embedder_of(
    job: pb.Job, registry: ModelRegistry, use: Use | None = None, max_tokens: int | None = None
) -> Embedder:
    """The job's embedder role: the offline MiniLM unless the recipe names another the
    operator declared (resolved here, by name, never from an address in the job). ``use``
    picks the local model's encoder for that use (``TAXOFORGE_EMBED_<USE>_ENCODER``);
    ``max_tokens`` truncates what the local model reads."""
    name = job.recipe.models.embedder.model or LOCAL_MODEL
    return embedder_for(name, registry, use=use, max_tokens=max_tokens)


async def embed_all(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Embeddings of many texts, batch by batch."""
    parts = [
        await embedder.embed(texts[i : i + _EMBED_BATCH])
        for i in range(0, len(texts), _EMBED_BATCH)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 384), dtype=np.float32)


def _write_plan(out: Path, plan: ClusterPlan, candidates: list[Candidate]) -> None:
    out.write_text(json.dumps(plan.to_json(candidates)), encoding="utf-8")


def _apply_tags(
    candidates: list[Candidate], raw: dict[str, list[str]], mapping: dict[str, str]
) -> list[list[str]]:
    """Each candidate's normalized tags (set on it too)."""
    out = []
    for c in candidates:
        kept = sorted({mapping[t] for t in raw.get(c.item_id, []) if t in mapping})
        c.tags = kept
        out.append(kept)
    return out


class Clusterer:
    """Runs the cluster step of a job (any replica; again gives the same plan)."""

    def __init__(self, ctx: ServiceContext, prefetch: TagPrefetch | None = None) -> None:
        """``prefetch``: what embeds the job's tags ahead (stopped before this step embeds)."""
        self._ctx = ctx
        self._datasets = DatasetStore(ctx.bus)
        self._prefetch = prefetch

    async def run(self, job: pb.Job) -> None:
        spec = selection_spec(job)
        with tempfile.TemporaryDirectory(prefix="taxoforge-cluster-") as tmp:
            path = Path(tmp) / "examples.jsonl"
            await download(self._datasets, work_object(job.id, "examples.jsonl"), path)
            loaded = await asyncio.to_thread(load_examples, path)
            candidates = loaded.candidates
            report = pb.SelectionReport()
            report.CopyFrom(job.selection)
            tags = await self._tags(job, spec, candidates, report.tacos)
            result = await self._cluster(job, spec, candidates, tags)
            # The step's embedding is done: the local encoders' memory (an ONNX session is
            # most of the selector's) goes back to the system before the select step.
            await asyncio.to_thread(release_local_models)
            # CPU-bound on 100k candidates: in a worker thread, so the loop keeps heartbeating.
            refs = await asyncio.to_thread(references, result, None, int(spec.seed))
            spare = int(getattr(self._ctx.settings, "comparison_spare_calls", SPARE_CALLS))
            compared = await asyncio.to_thread(
                comparison_plan, spec, candidates, result, refs, spare
            )
            max_calls, rule = comparison_calls(int(spec.comparison_budget), len(compared))
            # The texts compared, read by offset from the work file (candidates keep no replies).
            wanted = sorted({*compared, *(refs[int(result.assignment[i])] for i in compared)})
            samples = await asyncio.to_thread(_samples_at, path, loaded, wanted)
            plan = ClusterPlan(
                assignment=[int(c) for c in result.assignment],
                labels=list(result.labels),
                references=[candidates[r].item_id if r >= 0 else "" for r in refs],
                tags=tags,
                compared=[candidates[i].item_id for i in compared],
            )
            out = Path(tmp) / "clusters.json"
            await asyncio.to_thread(_write_plan, out, plan, candidates)
            await self._datasets.put_file(
                work_object(job.id, "clusters.json"), "clusters", out, len(candidates)
            )
        for cluster, label in enumerate(plan.labels[:_REPORTED_LABELS]):
            report.clusters.add(
                id=cluster,
                label=label,
                size=int(result.sizes[cluster]),
                reference_id=plan.references[cluster],
            )
        report.tacos.comparison_budget = spec.comparison_budget
        report.tacos.planned_comparisons = len(compared)
        report.tacos.calls_per_comparison = max_calls
        report.tacos.budget_rule = rule if compared else ""
        await record_report(self._ctx.jobs, job.id, Stage.CLUSTER, report)
        log.info("clustered", clusters=len(plan.labels), compared=len(compared))
        if not compared:
            await enter_step(self._ctx.bus, self._ctx.jobs, job.id, Stage.CLUSTER, Stage.SELECT)
            return
        sem = asyncio.Semaphore(256)

        async def _one(i: int) -> None:
            sample = candidates[i]
            task = pb.CompareTask(
                job_id=job.id,
                item_id=sample.item_id,
                sample=samples[i],
                reference=samples[refs[int(result.assignment[i])]],
                language=sample.language,
                max_calls=max_calls,
            )
            async with sem:
                await publish_work(self._ctx.bus, Stage.COMPARE, task, job.id, sample.item_id)

        # Tasks first, then the move (see Preparer._queue_tags).
        await asyncio.gather(*(_one(i) for i in compared))
        await enter_step(
            self._ctx.bus, self._ctx.jobs, job.id, Stage.CLUSTER, Stage.COMPARE, len(compared)
        )

    async def _tags(
        self,
        job: pb.Job,
        spec: pb.SelectionSpec,
        candidates: list[Candidate],
        tacos: pb.TacosReport,
    ) -> list[list[str]]:
        """Each candidate's normalized tags (empty unless clustering is by tags)."""
        if spec.cluster_by != "tags":
            return [[] for _ in candidates]
        raw: dict[str, list[str]] = {}
        failed: dict[str, str] = {}
        pages = 0
        async for page in self._ctx.items.scan(job.id, ItemKind.TAGS, pb.TaggedPage):
            pages += 1
            for row in page.rows:
                if row.failed:
                    failed[row.item_id] = row.failed
                else:
                    raw[row.item_id] = list(row.tags)
        stored = await self._ctx.items.count(job.id, ItemKind.TAGS)
        if pages < stored:  # a scan that ended early: read again rather than lose tags
            raise TransientError(f"read {pages} of {stored} tag pages; reading again")
        _tag_failures(tacos, candidates, raw, failed)
        occurrences = [t for c in candidates for t in raw.get(c.item_id, [])]
        tacos.raw_tags = len(set(occurrences))
        if self._prefetch is not None:
            # What was embedded ahead is in the cache now; the rest is this step's.
            ahead, left = await self._prefetch.settle(job.id)
            log.info("tags_embedded_ahead", raw_tags=tacos.raw_tags, ahead=ahead, left=left)
        normalized = await normalize_labels(
            occurrences,
            embedder_of(job, self._ctx.llm.registry, "tags"),
            min_frequency=spec.min_tag_frequency,
            threshold=spec.tag_merge_threshold,
        )
        tacos.kept_tags = len(normalized.counts)
        for into, merged in sorted(normalized.merges.items())[:_REPORTED_LABELS]:
            tacos.merges.add(kind="tag", into=into, merged=merged)
        for label, count, reason in normalized.dropped[:_REPORTED_LABELS]:
            tacos.dropped_tags.add(kind="tag", label=label, count=count, reason=reason)
        return await asyncio.to_thread(_apply_tags, candidates, raw, normalized.mapping)

    async def _cluster(
        self,
        job: pb.Job,
        spec: pb.SelectionSpec,
        candidates: list[Candidate],
        tags: list[list[str]],
    ) -> ClusterResult:
        k = spec.clusters or auto_clusters(len(candidates))
        if spec.cluster_by == "node":
            return await asyncio.to_thread(
                cluster_by_key, [c.node or c.language or "all" for c in candidates]
            )
        if spec.cluster_by == "embedding":
            vectors = await embed_all(
                embedder_of(job, self._ctx.llm.registry, "cluster"), [c.query for c in candidates]
            )
            return await asyncio.to_thread(cluster_by_vectors, vectors, k, spec.seed)
        return await asyncio.to_thread(cluster_by_tags, tags, k, spec.seed)


def _tag_failures(
    tacos: pb.TacosReport,
    candidates: list[Candidate],
    raw: dict[str, list[str]],
    failed: dict[str, str],
) -> None:
    """How many candidates were tagged, how many not and why: a query whose replies failed
    (its reason, cut to its first line), or one whose whole page was given up on."""
    reasons: Counter[str] = Counter()
    for c in candidates:
        if c.item_id not in raw:
            why = failed.get(c.item_id)
            reasons[why.splitlines()[0][:_REASON_CHARS] if why else _PAGE_FAILED] += 1
    tacos.tagged = len(candidates) - reasons.total()
    tacos.tag_failures = reasons.total()
    for reason, count in reasons.most_common(_REPORTED_REASONS):
        tacos.tag_failure_reasons.add(stage=Stage.TAG.value, reason=reason, items=count)


def _samples_at(path: Path, loaded: Loaded, rows: list[int]) -> dict[int, pb.Sample]:
    """The examples at ``rows`` of the work file, as the judge compares them."""
    out: dict[int, pb.Sample] = {}
    for i, example in zip(rows, examples_at(path, [loaded.offsets[i] for i in rows]), strict=True):
        out[i] = pb.Sample(
            id=example["item_id"], query=example["query"], response=example["response"]
        )
    return out
