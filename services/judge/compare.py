"""The compare stage (TACOS comparative scoring): a sample against its cluster's reference,
1-100, both orders; the comparison is stored once per sample and the step is told."""

from __future__ import annotations

import structlog

from services.judge.core import Judge
from taxoforge.bus.worker import Delivery
from taxoforge.pipeline import active_job
from taxoforge.service import ServiceContext
from taxoforge.store import ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["CompareHandler"]


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
