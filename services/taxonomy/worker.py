"""The taxonomy service's stages: plan (seeds for a generation job), expand (GLAN, per node),
induce (encode and tag, per chunk of instructions) and apply (the job's result becomes a new
taxonomy version). Every model result is stored once and reused on redelivery."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence

import structlog

from services.taxonomy.expansion import (
    Expander,
    SubjectItem,
    merge_subjects,
    session_nodes,
    subject_node,
)
from services.taxonomy.induction import Encoder, build_induced
from services.taxonomy.plan import plan_job
from services.taxonomy.tree import attribute_text, index, walk
from services.taxonomy.versions import TaxonomyStore
from taxoforge.bus import Stage
from taxoforge.bus.worker import Delivery
from taxoforge.datasets import read_object
from taxoforge.embeddings import embedder_for
from taxoforge.llm import StructuredOutputError
from taxoforge.pipeline import active_job, publish_work
from taxoforge.service import ServiceContext
from taxoforge.store import TERMINAL_STATES, ItemKind, ItemStore, JobKind, job_kind
from taxoforge.v1 import common_pb2 as pb

__all__ = ["ApplyHandler", "ExpandHandler", "InduceHandler", "PlanHandler", "chunk_id"]

log = structlog.get_logger(__name__)

_PUBLISH_BATCH = 256
# Seeds queued between two looks at whether a big plan's job was cancelled meanwhile.
_CANCEL_CHECK = 16 * _PUBLISH_BATCH
# Instructions encoded per induce message.
CHUNK = 8


def chunk_id(chunk: int) -> str:
    """The item id of an induction chunk."""
    return f"c{chunk:06d}"


class PlanHandler:
    """Plans a generation job and queues one instruct message per seed; safe to run twice."""

    def __init__(self, ctx: ServiceContext, store: TaxonomyStore) -> None:
        self._ctx = ctx
        self._store = store

    async def __call__(self, delivery: Delivery) -> None:
        ref = pb.JobRef.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=ref.job_id)
        job = await active_job(self._ctx.jobs, ref.job_id)
        if job is None:
            return
        recipe = job.recipe
        # The versions recorded at submission, not the latest: an edit since does not move a job.
        taxonomy = await self._store.get(recipe.taxonomy_id, job.taxonomy_version)
        tasks = None
        if recipe.task_taxonomy_id:
            tasks = await self._store.get(recipe.task_taxonomy_id, recipe.task_taxonomy_version)
        plan = plan_job(recipe, taxonomy, job.id, tasks)
        seeds = plan.seeds  # made batch by batch as they are queued, never all at once

        def _planned(j: pb.Job) -> bool:
            if j.state != pb.JOB_STATE_PENDING:
                return False
            j.planned = len(seeds)
            j.state = pb.JOB_STATE_RUNNING
            return True

        # Record the count before queueing, so completion is never judged against a partial plan.
        await self._ctx.jobs.update(job.id, _planned)
        bus = self._ctx.bus
        for start in range(0, len(seeds), _PUBLISH_BATCH):
            if start and start % _CANCEL_CHECK == 0 and await self._ended(job.id):
                log.info("plan_stopped", queued=start, seeds=len(seeds))  # cancelled meanwhile
                return
            batch = seeds[start : start + _PUBLISH_BATCH]
            await asyncio.gather(
                *(publish_work(bus, Stage.INSTRUCT, s, job.id, s.item_id) for s in batch)
            )
        log.info("job_planned", seeds=len(seeds), cells=len(plan.cells))

    async def _ended(self, job_id: str) -> bool:
        job = await self._ctx.jobs.get_cached(job_id)
        return job is None or job.state in TERMINAL_STATES


class ExpandHandler:
    """One node of an expansion: subject samples merged, syllabi written, proposals stored."""

    def __init__(self, ctx: ServiceContext, store: TaxonomyStore, expander: Expander) -> None:
        self._ctx = ctx
        self._store = store
        self._expander = expander

    async def __call__(self, delivery: Delivery) -> None:
        task = pb.TaxonomyTask.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=task.job_id, item_id=task.node_id)
        job = await active_job(self._ctx.jobs, task.job_id)
        if job is None:
            return
        spec = job.expand
        base = await self._store.get(spec.taxonomy_id, job.taxonomy_version)
        located = index(base.root)[task.node_id]
        items = self._ctx.items

        async def _expanded() -> pb.TaxonomyNode:
            origin = f"expansion:{job.id}"
            result = pb.TaxonomyNode(id=task.node_id)
            if located.node.kind == "subject":
                subjects = [located.node]
            else:
                samples = await asyncio.gather(
                    *(self._sample(job, located.node, located.path, k) for k in range(spec.samples))
                )
                existing = [c.title for c in located.node.children]
                merged = merge_subjects(samples, existing, spec.max_children)
                result.children.extend(
                    subject_node(task.node_id, item, votes, spec.samples, origin)
                    for item, votes in merged
                )
                subjects = list(result.children) if spec.levels >= 2 else []
            if subjects:
                syllabi = await asyncio.gather(
                    *(self._syllabus(job, located.node, located.path, s) for s in subjects)
                )
                if located.node.kind == "subject":
                    result.children.extend(syllabi[0])
                else:
                    for subject, sessions in zip(result.children, syllabi, strict=True):
                        subject.children.extend(sessions)
            return result

        key = ItemStore.key(job.id, ItemKind.EXPANDED, task.node_id)
        await items.once(key, pb.TaxonomyNode, _expanded)
        await self._ctx.usage.flush(job.id)
        await items.end(job.id, task.node_id, pb.ItemOutcome(item_id=task.node_id, judged=True))

    async def _sample(
        self, job: pb.Job, node: pb.TaxonomyNode, path: Sequence[str], k: int
    ) -> list[SubjectItem]:
        spec = job.expand

        async def _ask() -> pb.TaxonomyNode:
            temperature = spec.model.temperature if spec.model.HasField("temperature") else 1.0
            subjects, _ = await self._expander.subjects(
                node, path, spec.model, spec.max_children, k, temperature
            )
            out = pb.TaxonomyNode(id=f"s{k}")
            for item in subjects:
                child = out.children.add(title=item.title, description=item.description)
                child.attributes["level"].text = item.level
            return out

        key = ItemStore.key(job.id, ItemKind.SAMPLE, node.id, f"s{k}")
        stored = await self._ctx.items.once(key, pb.TaxonomyNode, _ask)
        return [
            SubjectItem(title=c.title, description=c.description, level=attribute_text(c, "level"))
            for c in stored.children
        ]

    async def _syllabus(
        self,
        job: pb.Job,
        discipline: pb.TaxonomyNode,
        path: Sequence[str],
        subject: pb.TaxonomyNode,
    ) -> list[pb.TaxonomyNode]:
        spec = job.expand

        async def _ask() -> pb.TaxonomyNode:
            sessions, _ = await self._expander.syllabus(
                subject, discipline, path, spec.model, spec.min_sessions, spec.max_sessions
            )
            out = pb.TaxonomyNode(id=subject.id)
            out.children.extend(session_nodes(subject.id, sessions, f"expansion:{job.id}"))
            return out

        key = ItemStore.key(job.id, ItemKind.SYLLABUS, discipline.id, subject.id.replace(".", "-"))
        stored = await self._ctx.items.once(key, pb.TaxonomyNode, _ask)
        return list(stored.children)


class InduceHandler:
    """One chunk of seed instructions, each encoded and tagged once."""

    def __init__(self, ctx: ServiceContext, encoder: Encoder) -> None:
        self._ctx = ctx
        self._encoder = encoder

    async def __call__(self, delivery: Delivery) -> None:
        task = pb.TaxonomyTask.FromString(delivery.data)
        item = chunk_id(task.chunk)
        structlog.contextvars.bind_contextvars(job_id=task.job_id, item_id=item)
        job = await active_job(self._ctx.jobs, task.job_id)
        if job is None:
            return
        instructions = await _inputs(self._ctx, job)
        start = task.chunk * CHUNK
        await asyncio.gather(
            *(
                self._encode(job, item, i, instructions[i])
                for i in range(start, min(start + CHUNK, len(instructions)))
            )
        )
        await self._ctx.usage.flush(job.id)
        await self._ctx.items.end(job.id, item, pb.ItemOutcome(item_id=item, judged=True))

    async def _encode(self, job: pb.Job, item: str, i: int, text: str) -> None:
        async def _ask() -> pb.InstructionEncoding:
            try:
                return await self._encoder.encode(i, text, job.induce.model)
            except StructuredOutputError as exc:
                # One unreadable reply loses one instruction, not its chunk; the report counts it.
                log.warning("instruction_not_encoded", index=i, error=str(exc)[:200])
                return pb.InstructionEncoding(index=i, instruction=text)

        key = ItemStore.key(job.id, ItemKind.ENCODED, item, f"{i:07d}")
        await self._ctx.items.once(key, pb.InstructionEncoding, _ask)


async def _inputs(ctx: ServiceContext, job: pb.Job) -> list[str]:
    blob = await read_object(ctx.bus, job.induce.input_object)
    return [json.loads(line) for line in blob.decode("utf-8").splitlines() if line.strip()]


class ApplyHandler:
    """A finished expansion or induction becomes a new taxonomy version; the job succeeds."""

    def __init__(self, ctx: ServiceContext, store: TaxonomyStore) -> None:
        self._ctx = ctx
        self._store = store

    async def __call__(self, delivery: Delivery) -> None:
        ref = pb.JobRef.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=ref.job_id)
        job = await active_job(self._ctx.jobs, ref.job_id)
        if job is None:
            return
        if job_kind(job) is JobKind.EXPAND:
            version, error, report = await self._apply_expansion(job)
        else:
            version, error, report = await self._apply_induction(job)

        def _done(j: pb.Job) -> bool:
            if j.state in TERMINAL_STATES:
                return False
            if error:
                j.state = pb.JOB_STATE_FAILED
                j.error = error
            else:
                j.state = pb.JOB_STATE_SUCCEEDED
                j.result_taxonomy_version = version
            if report is not None:
                j.induction.CopyFrom(report)
            return True

        await self._ctx.jobs.update(job.id, _done)

    async def _failures(self, job: pb.Job) -> str:
        reasons = Counter(
            [
                f.reason[:200]
                async for f in self._ctx.items.scan(job.id, ItemKind.FAILURE, pb.ItemFailure)
            ]
        )
        top = reasons.most_common(1)
        return f"; most often: {top[0][0]}" if top else ""

    async def _apply_expansion(self, job: pb.Job) -> tuple[str, str, pb.InductionReport | None]:
        results = [
            r async for r in self._ctx.items.scan(job.id, ItemKind.EXPANDED, pb.TaxonomyNode)
        ]
        if not results:
            return "", "every node failed to expand" + await self._failures(job), None
        change = f"expansion:{job.id}"

        def _insert(current: pb.Taxonomy) -> pb.TaxonomyNode:
            root = pb.TaxonomyNode()
            root.CopyFrom(current.root)
            nodes = index(root)
            taken = set(nodes)
            for result in sorted(results, key=lambda r: r.id):
                if result.id not in nodes:
                    continue  # pruned since the expansion started
                parent = nodes[result.id].node
                for child in result.children:
                    parent.children.append(_unique_ids(child, taken))
            return root

        current = await self._store.get(job.expand.taxonomy_id)
        root = _insert(current)
        new = pb.Taxonomy(
            id=current.id, title=current.title, description=current.description, root=root
        )
        added = await self._store.add_version(new, change, once_per_change=True)
        return added.version, "", None

    async def _apply_induction(self, job: pb.Job) -> tuple[str, str, pb.InductionReport | None]:
        spec = job.induce
        encodings = [
            e
            async for e in self._ctx.items.scan(job.id, ItemKind.ENCODED, pb.InstructionEncoding)
            if e.use_case
        ]
        if not encodings:
            return "", "no instruction could be encoded" + await self._failures(job), None
        embedder = embedder_for(spec.embedder.model, self._ctx.llm.registry)
        root, report = await build_induced(
            spec.taxonomy_id,
            spec.title or spec.taxonomy_id,
            sorted(encodings, key=lambda e: e.index),
            embedder,
            spec.min_frequency,
            spec.merge_threshold,
            f"induction:{job.id}",
        )
        report.instructions = spec.instructions
        if not root.children:
            return (
                "",
                (
                    f"no use case was seen at least {spec.min_frequency} times in "
                    f"{len(encodings)} instructions; lower min_frequency or add instructions"
                ),
                report,
            )
        new = pb.Taxonomy(id=spec.taxonomy_id, title=root.title, root=root)
        added = await self._store.add_version(new, f"induction:{job.id}", once_per_change=True)
        return added.version, "", report


def _unique_ids(node: pb.TaxonomyNode, taken: set[str]) -> pb.TaxonomyNode:
    """The node with ids made unique in the tree (a subject's sessions follow its new id)."""
    out = pb.TaxonomyNode()
    out.CopyFrom(node)
    for located in [out, *(loc.node for loc in walk(out))]:
        base, n = located.id, 2
        while located.id in taken:
            located.id = f"{base[:58]}-{n}"
            n += 1
        taken.add(located.id)
    return out
