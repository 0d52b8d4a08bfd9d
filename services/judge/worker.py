"""The judge's stages. Judge: the item's candidates judged (each rubric score stored once), the
judgment stored and the item ended, or the instruction sent back by contrastive filtering for
another Self-Rubrics round. Compare (TACOS comparative scoring): a sample against its
cluster's reference, 1-100, both orders; the comparison is stored once per sample and the
step is told."""

from __future__ import annotations

import random

import structlog

from services.judge.panel import Judge, Panel
from taxoforge.bus import Stage
from taxoforge.bus.worker import Delivery
from taxoforge.methods import sampling_seed
from taxoforge.pipeline import active_job, publish_work
from taxoforge.service import ServiceContext
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["CompareHandler", "JudgeHandler"]


class JudgeHandler:
    """Candidates in; the judgment (or a refinement request) out."""

    def __init__(self, ctx: ServiceContext, judge: Judge) -> None:
        self._ctx = ctx
        self._judge = judge
        self._panel = Panel(judge)

    async def __call__(self, delivery: Delivery) -> None:
        candidates = pb.Candidates.FromString(delivery.data)
        instruction = candidates.instruction
        item_id = instruction.item_id
        structlog.contextvars.bind_contextvars(job_id=instruction.job_id, item_id=item_id)
        job = await active_job(self._ctx.jobs, instruction.job_id)
        if job is None:
            return
        items = self._ctx.items
        version = instruction.version
        key = ItemStore.key(job.id, ItemKind.JUDGED, item_id, f"v{version}")
        judged = await items.once(key, pb.Judgment, lambda: self._judge_version(job, candidates))
        if judged.contrastive.decision == "refine":
            # Back to the generator for another Self-Rubrics round; the item is not done.
            again = pb.Instruction()
            again.CopyFrom(instruction)
            again.contrastive.append(judged.contrastive)
            await publish_work(
                self._ctx.bus, Stage.REFINE, again, job.id, item_id, version=version + 1
            )
            return
        await items.put_once(ItemStore.key(job.id, ItemKind.JUDGMENT, item_id), judged)
        await self._ctx.usage.flush(job.id)
        await items.end(job.id, item_id, pb.ItemOutcome(item_id=item_id, judged=True))

    async def _judge_version(self, job: pb.Job, candidates: pb.Candidates) -> pb.Judgment:
        recipe = job.recipe
        index = candidates.instruction.seed.index
        rng = random.Random(
            sampling_seed(recipe.seed, index, "judge", candidates.instruction.version)
        )
        return await self._panel.run(
            candidates,
            recipe.models.judge,
            recipe.judging,
            recipe.min_margin,
            rng,
            contrastive=recipe.contrastive,
            score=lambda i, r: self._score(job, i, r),
        )

    async def _score(
        self, job: pb.Job, instruction: pb.Instruction, response: pb.Response
    ) -> pb.Score:
        async def _write() -> pb.Score:
            return await self._judge.score(instruction, response, job.recipe.models.judge)

        part = ItemStore.versioned(response.id.rsplit(".", 1)[-1], instruction.version)
        key = ItemStore.key(job.id, ItemKind.SCORE, instruction.item_id, part)
        return await self._ctx.items.once(key, pb.Score, _write)


class CompareHandler:
    """CompareTask in; the sample's Comparison (A: the sample, B: the reference) out."""

    def __init__(self, ctx: ServiceContext, judge: Judge) -> None:
        self._ctx = ctx
        self._judge = judge

    async def __call__(self, delivery: Delivery) -> None:
        task = pb.CompareTask.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=task.job_id, item_id=task.item_id)
        job = await active_job(self._ctx.jobs, task.job_id)
        if job is None:
            return

        async def _compare() -> pb.Comparison:
            return await self._judge.compare_samples(
                task.sample, task.reference, job.recipe.models.judge, task.language
            )

        key = ItemStore.key(job.id, ItemKind.COMPARISON, task.item_id)
        await self._ctx.items.once(key, pb.Comparison, _compare)
        await self._ctx.items.announce(job.id)
