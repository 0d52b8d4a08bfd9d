"""The selector's NATS handlers: the whole-job steps (prepare, cluster and select), each run
once per job by whichever replica takes its message, and the per-item tag stage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from services.selector.tagging import Tagger
from taxoforge.bus import Stage
from taxoforge.bus.worker import Delivery
from taxoforge.errors import TransientError
from taxoforge.pipeline import active_job
from taxoforge.service import ServiceContext
from taxoforge.store import SELECTION_PHASES, ItemKind, ItemStore, JobStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["StepHandler", "TagHandler"]

log = structlog.get_logger(__name__)


class StepHandler:
    """JobRef in; the step runs if the job is at that step (a late duplicate is dropped)."""

    def __init__(
        self, jobs: JobStore, step: Stage, run: Callable[[pb.Job], Awaitable[object]]
    ) -> None:
        self._jobs = jobs
        self._step = step
        self._run = run

    async def __call__(self, delivery: Delivery) -> None:
        ref = pb.JobRef.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=ref.job_id, step=self._step.value)
        if await active_job(self._jobs, ref.job_id) is None:
            return
        job = await self._jobs.get(ref.job_id)  # fresh: the step was just entered
        if job is None:
            return
        mine = SELECTION_PHASES.index(self._step)
        at = SELECTION_PHASES.index(Stage(job.phase)) if job.phase else -1
        if job.state == pb.JOB_STATE_RUNNING or at < mine:
            # Queued a moment before the job was moved to this step: try again shortly.
            raise TransientError(f"job {job.id} is not at step {self._step.value} yet")
        if job.state != pb.JOB_STATE_SELECTING or at > mine:
            log.info("step_skipped", phase=job.phase, state=pb.JobState.Name(job.state))
            return
        await self._run(job)


class TagHandler:
    """TagTask in; the item's tags stored once."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._tagger = Tagger(ctx.llm)

    async def __call__(self, delivery: Delivery) -> None:
        task = pb.TagTask.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=task.job_id, item_id=task.item_id)
        job = await active_job(self._ctx.jobs, task.job_id)
        if job is None:
            return
        cfg = job.recipe.models.tagger

        async def _tag() -> pb.Tags:
            return await self._tagger.tag(task, cfg)

        key = ItemStore.key(job.id, ItemKind.TAGS, task.item_id)
        await self._ctx.items.once(key, pb.Tags, _tag)
        await self._ctx.items.announce(job.id)
