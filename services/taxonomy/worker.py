"""The plan stage: a job's recipe becomes seeds on the instruct queue."""

from __future__ import annotations

import asyncio

import structlog

from services.taxonomy.catalog import Catalog
from services.taxonomy.core import plan_job
from taxoforge.bus import Bus, Stage
from taxoforge.bus.worker import Delivery
from taxoforge.pipeline import active_job, publish_work
from taxoforge.store import JobStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["PlanHandler"]

log = structlog.get_logger(__name__)

_PUBLISH_BATCH = 256


class PlanHandler:
    """Plans a job and queues one instruct message per seed; safe to run twice."""

    def __init__(self, bus: Bus, jobs: JobStore, catalog: Catalog) -> None:
        self._bus = bus
        self._jobs = jobs
        self._catalog = catalog

    async def __call__(self, delivery: Delivery) -> None:
        ref = pb.JobRef.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=ref.job_id)
        job = await active_job(self._jobs, ref.job_id)
        if job is None:
            return
        taxonomy = self._catalog.get(job.recipe.taxonomy_id)
        plan = plan_job(job.recipe, taxonomy, job.id)

        def _planned(j: pb.Job) -> bool:
            if j.state != pb.JOB_STATE_PENDING:
                return False
            j.planned = len(plan.seeds)
            j.taxonomy_version = taxonomy.version
            j.state = pb.JOB_STATE_RUNNING
            return True

        # Record the count before queueing, so completion is never judged against a partial plan.
        await self._jobs.update(job.id, _planned)
        for start in range(0, len(plan.seeds), _PUBLISH_BATCH):
            batch = plan.seeds[start : start + _PUBLISH_BATCH]
            await asyncio.gather(
                *(publish_work(self._bus, Stage.INSTRUCT, s, job.id, s.item_id) for s in batch)
            )
        log.info("job_planned", seeds=len(plan.seeds), cells=len(plan.cells))
