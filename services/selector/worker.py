"""The selector's NATS handlers: the whole-job steps (prepare, cluster and select), each run
once per job by whichever replica takes its message, and the per-item tag stage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from services.selector.tagging import Tagger
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext
from taxoforge.errors import TransientError
from taxoforge.stage import StageHandler
from taxoforge.store import SELECTION_PHASES, ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["StepHandler", "TagHandler"]

log = structlog.get_logger(__name__)


class StepHandler(StageHandler[pb.JobRef]):
    """JobRef in; the step runs if the job is at that step (a late duplicate is dropped)."""

    def __init__(
        self, ctx: ServiceContext, stage: Stage, step: Callable[[pb.Job], Awaitable[object]]
    ) -> None:
        super().__init__(ctx)
        self.stage = stage
        self._step = step

    async def job(self, job_id: str) -> pb.Job | None:
        if await super().job(job_id) is None:
            return None
        job = await self.ctx.jobs.get(job_id)  # fresh: the step was just entered
        if job is None:
            return None
        mine = SELECTION_PHASES.index(self.stage)
        at = SELECTION_PHASES.index(Stage(job.phase)) if job.phase else -1
        if job.state == pb.JOB_STATE_RUNNING or at < mine:
            # Queued a moment before the job was moved to this step: try again shortly.
            raise TransientError(f"job {job.id} is not at step {self.stage.value} yet")
        if job.state != pb.JOB_STATE_SELECTING or at > mine:
            log.info("step_skipped", phase=job.phase, state=pb.JobState.Name(job.state))
            return None
        return job

    async def run(self, job: pb.Job, message: pb.JobRef) -> None:
        await self._step(job)


class TagHandler(StageHandler[pb.TagTask]):
    """TagTask in; the item's tags stored once."""

    stage = Stage.TAG

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self._tagger = Tagger(ctx.llm)

    async def run(self, job: pb.Job, task: pb.TagTask) -> None:
        key = ItemStore.key(job.id, ItemKind.TAGS, task.item_id)
        await self.once(key, pb.Tags, self._tagger.tag, task, job.recipe.models.tagger)
        await self.ctx.items.announce(job.id)
