"""The selector's NATS handlers: the whole-job steps (prepare, cluster and select), each run
once per job by whichever replica takes its message, and the tag stage (a page of queries per
message)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from services.selector.clustering import embedder_of
from services.selector.step_lease import held
from services.selector.tag_vectors import TagPrefetch
from services.selector.tagging import Tagger
from taxoforge.bus import Stage
from taxoforge.bus.worker import Delivery
from taxoforge.context import ServiceContext
from taxoforge.errors import TransientError
from taxoforge.stage import StageHandler
from taxoforge.store import SELECTION_PHASES, ItemKind, ItemStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["StepHandler", "TagHandler"]

log = structlog.get_logger(__name__)

# How long a step's message waits, in turn, for its job to be moved to the step (1.55 s in
# all) before it is handed back for redelivery.
_MOVE_WAITS = (0.05, 0.1, 0.2, 0.4, 0.8)


class StepHandler(StageHandler[pb.JobRef]):
    """JobRef in; the step runs if the job is at that step (a late duplicate is dropped).

    One run at a time per job and step, across replicas: the run holds a lease in the jobs KV
    (see ``step_lease``). A redelivery that arrives while the first run goes on waits for the
    lease, its message kept alive by the worker's heartbeat, then finds the job moved on and
    returns; should the first run die, the wait ends after the lease's ttl and this one runs.
    """

    def __init__(
        self, ctx: ServiceContext, stage: Stage, step: Callable[[pb.Job], Awaitable[object]]
    ) -> None:
        super().__init__(ctx)
        self.stage = stage
        self._step = step

    async def __call__(self, delivery: Delivery) -> None:
        job_id = pb.JobRef.FromString(delivery.data).job_id
        if not job_id or await self.job(job_id) is None:
            return  # not this step's turn: no lease needed to say so
        kv = await self.ctx.bus.jobs_kv()
        key = f"lease.{job_id}.{self.stage.value}"
        ttl = float(self.ctx.settings.ack_wait_s)
        owner = f"{self.ctx.instance}:{delivery.stream_seq}:{delivery.deliveries}"
        # Under the lease, the job is read again: a run that waited finds the step done.
        await held(kv, key, owner, ttl, lambda: super(StepHandler, self).__call__(delivery))

    async def job(self, job_id: str) -> pb.Job | None:
        if await super().job(job_id) is None:
            return None
        mine = SELECTION_PHASES.index(self.stage)
        waits = iter(_MOVE_WAITS)
        while True:
            job = await self.ctx.jobs.get(job_id)  # fresh: the step was just entered
            if job is None:
                return None
            at = SELECTION_PHASES.index(Stage(job.phase)) if job.phase else -1
            if job.state != pb.JOB_STATE_RUNNING and at >= mine:
                break
            # Queued a moment before the job was moved to this step (the message goes first,
            # so a crash between the two leaves the step to run again): the move follows
            # within milliseconds, so look again shortly, and only then leave the message to
            # be redelivered (seconds later).
            wait = next(waits, None)
            if wait is None:
                raise TransientError(f"job {job.id} is not at step {self.stage.value} yet")
            await asyncio.sleep(wait)
        if job.state != pb.JOB_STATE_SELECTING or at > mine:
            log.info("step_skipped", phase=job.phase, state=pb.JobState.Name(job.state))
            return None
        return job

    async def run(self, job: pb.Job, message: pb.JobRef) -> None:
        await self._step(job)


class TagHandler(StageHandler[pb.TagPage]):
    """TagPage in; the page's tags stored once, as one result."""

    stage = Stage.TAG

    def __init__(self, ctx: ServiceContext, prefetch: TagPrefetch | None = None) -> None:
        """``prefetch``: given each stored page's tags, to embed them ahead of the cluster
        step (None: the cluster step embeds them all)."""
        super().__init__(ctx)
        self._tagger = Tagger(ctx.llm)
        self._prefetch = prefetch

    async def run(self, job: pb.Job, page: pb.TagPage) -> None:
        key = ItemStore.key(job.id, ItemKind.TAGS, page.item_id)
        tagged = await self.once(
            key, pb.TaggedPage, self._tagger.tag_page, page, job.recipe.models.tagger
        )
        await self.ctx.items.announce(job.id)
        if self._prefetch is not None:  # pages are made only for jobs clustered by tags
            self._prefetch.add(
                job.id,
                lambda: embedder_of(job, self.ctx.llm.registry, "tags"),
                (tag for row in tagged.rows for tag in row.tags),
            )
