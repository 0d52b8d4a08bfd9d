"""The taxonomy service's stages: plan (seeds for a generation job), expand (GLAN, per node),
induce (encode and tag, per chunk of instructions) and apply (the job's result becomes a new
taxonomy version). Every model result is stored once and reused on redelivery."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator, Sequence

import structlog

from services.taxonomy.expansion import (
    Expander,
    SubjectItem,
    graft_expansions,
    merge_subjects,
    session_nodes,
    subject_node,
)
from services.taxonomy.induction import CHUNK, Encoder, build_induced, chunk_id
from services.taxonomy.plan import plan_job
from services.taxonomy.review import (
    MAX_ROUNDS,
    Review,
    budget_quotas,
    composition_of,
    record_round,
    round_cells,
    tally,
)
from services.taxonomy.tree import attribute_text, index
from services.taxonomy.versions import TaxonomyStore
from taxoforge.bus import Stage
from taxoforge.composition import (
    COMPOSITION_OBJECT,
    candidate_budget,
    cell_of,
    preference_promised,
    top_up,
)
from taxoforge.context import ServiceContext
from taxoforge.datasets import read_object, work_object, write_object
from taxoforge.embeddings import embedder_for
from taxoforge.jobs import lifecycle
from taxoforge.jobs.model import TERMINAL_STATES, JobKind, job_kind
from taxoforge.llm import StructuredOutputError
from taxoforge.stage import StageHandler
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["ApplyHandler", "ExpandHandler", "InduceHandler", "PlanHandler"]

log = structlog.get_logger(__name__)

_PUBLISH_BATCH = 256
# Seeds queued between two looks at whether a big plan's job was cancelled meanwhile.
_CANCEL_CHECK = 16 * _PUBLISH_BATCH


class PlanHandler(StageHandler[pb.JobRef]):
    """Plans a generation job and queues one instruct message per seed; then reviews it each
    time its items have all ended (``JobRef.round`` >= 1): short cells get replacement seeds,
    or the job goes on to selection with its composition. Safe to run twice."""

    stage = Stage.PLAN

    def __init__(self, ctx: ServiceContext, store: TaxonomyStore) -> None:
        super().__init__(ctx)
        self._store = store

    async def run(self, job: pb.Job, message: pb.JobRef) -> None:
        recipe = job.recipe
        # The versions recorded at submission, not the latest: an edit since does not move a job.
        taxonomy = await self._store.get(recipe.taxonomy_id, job.taxonomy_version)
        tasks = None
        if recipe.task_taxonomy_id:
            tasks = await self._store.get(recipe.task_taxonomy_id, recipe.task_taxonomy_version)
        if message.round:
            await self._review(job, message.round, taxonomy, tasks)
            return
        plan = plan_job(recipe, taxonomy, job.id, tasks)
        # Record the count before queueing, so completion is never judged against a partial plan.
        await lifecycle.plan(self.ctx.jobs, job.id, len(plan.seeds))
        await self._queue(job, plan.seeds)  # made batch by batch, never all at once
        log.info("job_planned", seeds=len(plan.seeds), cells=len(plan.cells))

    async def _queue(self, job: pb.Job, seeds: Sequence[pb.Seed]) -> None:
        for start in range(0, len(seeds), _PUBLISH_BATCH):
            if start and start % _CANCEL_CHECK == 0 and await self._ended(job.id):
                log.info("plan_stopped", queued=start, seeds=len(seeds))  # cancelled meanwhile
                return
            batch = seeds[start : start + _PUBLISH_BATCH]
            await asyncio.gather(*(self.publish(Stage.INSTRUCT, s, job, s.item_id) for s in batch))

    async def _review(
        self, job: pb.Job, round_: int, taxonomy: pb.Taxonomy, tasks: pb.Taxonomy | None
    ) -> None:
        """Review round ``round_``: top up short cells, or hand the job to selection."""
        if job.state != pb.JOB_STATE_RUNNING or job.rounds > round_ or job.rounds < round_ - 1:
            return  # decided and moved on, or a stale round
        recipe = job.recipe
        review = Review.of(recipe, taxonomy, job.id, tasks)
        rounds = [await self._round(job.id, r) for r in range(1, job.rounds + 1)]
        if job.rounds == round_:  # decided before a crash: queue its seeds again
            record = rounds[-1]
            await self._queue(job, list(self._seeds(review, record)))
            return
        promised = preference_promised(recipe.selection.exports)
        unit = recipe.selection.budget_unit or "records"
        budget = (recipe.selection.budget or recipe.budget) if unit == "records" else 0
        targets = budget_quotas(review.cells, int(budget))
        extra = round_cells(rounds, review.cells)
        outcomes = [o async for o in self.ctx.items.scan(job.id, ItemKind.OUTCOME, pb.ItemOutcome)]
        gates: dict[str, list[str]] = {}
        async for rejected in self.ctx.items.scan(job.id, ItemKind.REJECTED, pb.Instruction):
            gates[rejected.item_id] = [r.reason for r in rejected.rejections]
        tallies = tally(review, targets, extra, job.planned, outcomes, gates, promised)
        limit = candidate_budget(recipe)
        asks, cut = top_up(tallies, promised, limit - int(job.planned))
        if round_ > MAX_ROUNDS or job.stopped:  # no more rounds, or no more spending
            asks = [0] * len(asks)
        if any(asks):
            record = record_round(review.cells, asks, int(job.planned))
            await write_object(
                self.ctx.bus, work_object(job.id, f"round-{round_}.pb"), record.SerializeToString()
            )
            if not await lifecycle.top_up(self.ctx.jobs, job.id, round_, sum(asks)):
                return
            seeds = list(self._seeds(review, record))
            await self._queue(job, seeds)
            log.info("job_topped_up", round=round_, seeds=len(seeds), cells=sum(map(bool, asks)))
            return
        short = [t for t in tallies if t.need(promised)]
        stopped = ""
        if short:
            stopped = (
                job.stopped
                if job.stopped
                else f"top-up stopped after {round_ - 1} rounds"
                if round_ > MAX_ROUNDS
                else f"candidate budget spent: {job.planned} of {limit} items generated"
                if cut or job.planned >= limit
                else ""
            )
        composition = composition_of(review, tallies, promised, job, limit, stopped, extra)
        await write_object(
            self.ctx.bus, work_object(job.id, COMPOSITION_OBJECT), composition.SerializeToString()
        )
        # Queued before the job moves (as the completion tracker does): a crash in between
        # leaves a running job whose next review queues it again under the same message id.
        await self.publish(Stage.PREPARE, pb.JobRef(job_id=job.id), job)
        await lifecycle.select(self.ctx.jobs, job.id, Stage.PREPARE)
        log.info("job_reviewed", rounds=round_ - 1, short_cells=len(short))

    async def _round(self, job_id: str, round_: int) -> pb.Composition:
        data = await read_object(self.ctx.bus, work_object(job_id, f"round-{round_}.pb"))
        return pb.Composition.FromString(data)

    @staticmethod
    def _seeds(review: Review, record: pb.Composition) -> Iterator[pb.Seed]:
        """The replacement seeds ``record`` asked for (cells in plan order)."""
        position = {cell_of(c): i for i, c in enumerate(review.cells)}
        asks = [0] * len(review.cells)
        for cell in record.cells:
            asks[position[cell_of(cell)]] = int(cell.candidates)
        return review.plan.seeds.replacements(review.seed_cells, asks, int(record.planned))

    async def _ended(self, job_id: str) -> bool:
        job = await self.ctx.jobs.get_cached(job_id)
        return job is None or job.state in TERMINAL_STATES


class ExpandHandler(StageHandler[pb.TaxonomyTask]):
    """One node of an expansion: subject samples merged, syllabi written, proposals stored."""

    stage = Stage.EXPAND

    def __init__(self, ctx: ServiceContext, store: TaxonomyStore, expander: Expander) -> None:
        super().__init__(ctx)
        self._store = store
        self._expander = expander

    def ids(self, message: pb.TaxonomyTask) -> tuple[str, str]:
        return message.job_id, message.node_id

    async def run(self, job: pb.Job, task: pb.TaxonomyTask) -> None:
        base = await self._store.get(job.expand.taxonomy_id, job.taxonomy_version)
        located = index(base.root)[task.node_id]
        key = ItemStore.key(job.id, ItemKind.EXPANDED, task.node_id)
        await self.once(key, pb.TaxonomyNode, self._expand, job, located.node, located.path)
        await self.finish(job, task.node_id)

    async def _expand(
        self, job: pb.Job, node: pb.TaxonomyNode, path: Sequence[str]
    ) -> pb.TaxonomyNode:
        spec = job.expand
        origin = f"expansion:{job.id}"
        result = pb.TaxonomyNode(id=node.id)
        if node.kind == "subject":
            subjects = [node]
        else:
            samples = await asyncio.gather(
                *(self._sample(job, node, path, k) for k in range(spec.samples))
            )
            existing = [c.title for c in node.children]
            merged = merge_subjects(samples, existing, spec.max_children)
            result.children.extend(
                subject_node(node.id, item, votes, spec.samples, origin) for item, votes in merged
            )
            subjects = list(result.children) if spec.levels >= 2 else []
        if subjects:
            syllabi = await asyncio.gather(*(self._syllabus(job, node, path, s) for s in subjects))
            if node.kind == "subject":
                result.children.extend(syllabi[0])
            else:
                for subject, sessions in zip(result.children, syllabi, strict=True):
                    subject.children.extend(sessions)
        return result

    async def _sample(
        self, job: pb.Job, node: pb.TaxonomyNode, path: Sequence[str], k: int
    ) -> list[SubjectItem]:
        key = ItemStore.key(job.id, ItemKind.SAMPLE, node.id, f"s{k}")
        stored = await self.once(key, pb.TaxonomyNode, self._ask_subjects, job, node, path, k)
        return [
            SubjectItem(title=c.title, description=c.description, level=attribute_text(c, "level"))
            for c in stored.children
        ]

    async def _ask_subjects(
        self, job: pb.Job, node: pb.TaxonomyNode, path: Sequence[str], k: int
    ) -> pb.TaxonomyNode:
        spec = job.expand
        temperature = spec.model.temperature if spec.model.HasField("temperature") else 1.0
        subjects, _ = await self._expander.subjects(
            node, path, spec.model, spec.max_children, k, temperature
        )
        out = pb.TaxonomyNode(id=f"s{k}")
        for item in subjects:
            child = out.children.add(title=item.title, description=item.description)
            child.attributes["level"].text = item.level
        return out

    async def _syllabus(
        self,
        job: pb.Job,
        discipline: pb.TaxonomyNode,
        path: Sequence[str],
        subject: pb.TaxonomyNode,
    ) -> list[pb.TaxonomyNode]:
        key = ItemStore.key(job.id, ItemKind.SYLLABUS, discipline.id, subject.id.replace(".", "-"))
        stored = await self.once(
            key, pb.TaxonomyNode, self._ask_syllabus, job, discipline, path, subject
        )
        return list(stored.children)

    async def _ask_syllabus(
        self,
        job: pb.Job,
        discipline: pb.TaxonomyNode,
        path: Sequence[str],
        subject: pb.TaxonomyNode,
    ) -> pb.TaxonomyNode:
        spec = job.expand
        sessions, _ = await self._expander.syllabus(
            subject, discipline, path, spec.model, spec.min_sessions, spec.max_sessions
        )
        out = pb.TaxonomyNode(id=subject.id)
        out.children.extend(session_nodes(subject.id, sessions, f"expansion:{job.id}"))
        return out


class InduceHandler(StageHandler[pb.TaxonomyTask]):
    """One chunk of seed instructions, each encoded and tagged once."""

    stage = Stage.INDUCE

    def __init__(self, ctx: ServiceContext, encoder: Encoder) -> None:
        super().__init__(ctx)
        self._encoder = encoder

    def ids(self, message: pb.TaxonomyTask) -> tuple[str, str]:
        return message.job_id, chunk_id(message.chunk)

    async def run(self, job: pb.Job, task: pb.TaxonomyTask) -> None:
        item = chunk_id(task.chunk)
        instructions = await _inputs(self.ctx, job)
        start = task.chunk * CHUNK
        await asyncio.gather(
            *(
                self.once(
                    ItemStore.key(job.id, ItemKind.ENCODED, item, f"{i:07d}"),
                    pb.InstructionEncoding,
                    self._encode,
                    job,
                    i,
                    instructions[i],
                )
                for i in range(start, min(start + CHUNK, len(instructions)))
            )
        )
        await self.finish(job, item)

    async def _encode(self, job: pb.Job, i: int, text: str) -> pb.InstructionEncoding:
        try:
            return await self._encoder.encode(i, text, job.induce.model)
        except StructuredOutputError as exc:
            # One unreadable reply loses one instruction, not its chunk; the report counts it.
            log.warning("instruction_not_encoded", index=i, error=str(exc)[:200])
            return pb.InstructionEncoding(index=i, instruction=text)


async def _inputs(ctx: ServiceContext, job: pb.Job) -> list[str]:
    blob = await read_object(ctx.bus, job.induce.input_object)
    return [json.loads(line) for line in blob.decode("utf-8").splitlines() if line.strip()]


class ApplyHandler(StageHandler[pb.JobRef]):
    """A finished expansion or induction becomes a new taxonomy version; the job succeeds."""

    stage = Stage.APPLY

    def __init__(self, ctx: ServiceContext, store: TaxonomyStore) -> None:
        super().__init__(ctx)
        self._store = store

    async def run(self, job: pb.Job, message: pb.JobRef) -> None:
        if job_kind(job) is JobKind.EXPAND:
            version, error, report = await self._apply_expansion(job)
        else:
            version, error, report = await self._apply_induction(job)
        if error:
            await lifecycle.fail(self.ctx.jobs, job.id, error, induction=report)
        else:
            await lifecycle.succeed(
                self.ctx.jobs, job.id, taxonomy_version=version, induction=report
            )

    async def _failures(self, job: pb.Job) -> str:
        reasons = Counter(
            [
                f.reason[:200]
                async for f in self.ctx.items.scan(job.id, ItemKind.FAILURE, pb.ItemFailure)
            ]
        )
        top = reasons.most_common(1)
        return f"; most often: {top[0][0]}" if top else ""

    async def _apply_expansion(self, job: pb.Job) -> tuple[str, str, pb.InductionReport | None]:
        results = [r async for r in self.ctx.items.scan(job.id, ItemKind.EXPANDED, pb.TaxonomyNode)]
        if not results:
            return "", "every node failed to expand" + await self._failures(job), None
        current = await self._store.get(job.expand.taxonomy_id)
        root = graft_expansions(current.root, results)
        new = pb.Taxonomy(
            id=current.id, title=current.title, description=current.description, root=root
        )
        added = await self._store.add_version(new, f"expansion:{job.id}", once_per_change=True)
        return added.version, "", None

    async def _apply_induction(self, job: pb.Job) -> tuple[str, str, pb.InductionReport | None]:
        spec = job.induce
        encodings = [
            e
            async for e in self.ctx.items.scan(job.id, ItemKind.ENCODED, pb.InstructionEncoding)
            if e.use_case
        ]
        if not encodings:
            return "", "no instruction could be encoded" + await self._failures(job), None
        embedder = embedder_for(spec.embedder.model, self.ctx.llm.registry)
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
