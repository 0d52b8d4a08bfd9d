"""The judge stage: every candidate scored once, the item's judgment stored, the item ended."""

from __future__ import annotations

import asyncio

import structlog

from services.judge.core import Judge, build_judgment
from taxoforge.bus.worker import Delivery
from taxoforge.pipeline import active_job
from taxoforge.service import ServiceContext
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["JudgeHandler"]


class JudgeHandler:
    """Candidates in, judgment and outcome stored."""

    def __init__(self, ctx: ServiceContext, judge: Judge) -> None:
        self._ctx = ctx
        self._judge = judge

    async def __call__(self, delivery: Delivery) -> None:
        candidates = pb.Candidates.FromString(delivery.data)
        instruction = candidates.instruction
        item_id = instruction.item_id
        structlog.contextvars.bind_contextvars(job_id=instruction.job_id, item_id=item_id)
        job = await active_job(self._ctx.jobs, instruction.job_id)
        if job is None:
            return

        async def _judgment() -> pb.Judgment:
            scores = await asyncio.gather(
                *(self._score(job, instruction, r) for r in candidates.responses)
            )
            return build_judgment(candidates, scores, job.recipe.min_margin)

        key = ItemStore.key(job.id, ItemKind.JUDGMENT, item_id)
        await self._ctx.items.once(key, pb.Judgment, _judgment)
        await self._ctx.usage.flush(job.id)
        await self._ctx.items.end(job.id, item_id, pb.ItemOutcome(item_id=item_id, judged=True))

    async def _score(
        self, job: pb.Job, instruction: pb.Instruction, response: pb.Response
    ) -> pb.Score:
        async def _write() -> pb.Score:
            score = await self._judge.score(instruction, response, job.recipe.models.judge)
            self._ctx.usage.add(job.id, score.call.usage)
            return score

        key = ItemStore.key(
            job.id, ItemKind.SCORE, instruction.item_id, response.id.rsplit(".", 1)[-1]
        )
        return await self._ctx.items.once(key, pb.Score, _write)
