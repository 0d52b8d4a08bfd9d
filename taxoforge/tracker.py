"""Completion: a running job whose items have all ended is queued for its finishing stage
(a review of its plan cells for generation jobs, applying the result for taxonomy jobs); a
selecting job whose per-item step (tag, compare) has every result is queued for its next step.

Every replica of the service that finishes a kind of job runs this check; the CAS on the job's
state and the finishing message's id make it happen once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping

import structlog
from nats.aio.msg import Msg

from taxoforge.bus import Stage
from taxoforge.bus.topology import ENDED_SUBJECTS
from taxoforge.context import ServiceContext
from taxoforge.jobs.lifecycle import select
from taxoforge.jobs.model import JobKind, job_kind
from taxoforge.pipeline import enter_step, publish_work
from taxoforge.store import SELECTION_RESULT, ItemKind
from taxoforge.v1 import common_pb2 as pb

__all__ = ["CompletionTracker"]

log = structlog.get_logger(__name__)


class CompletionTracker:
    """Checks a job as soon as one of its items ends, and every active job each ``period_s``.

    The announcements are core NATS (lost if no selector listens); the periodic check is what
    guarantees completion is noticed, the announcements only make it quick.
    """

    _DEBOUNCE_S = 0.05

    def __init__(
        self,
        ctx: ServiceContext,
        finishes: Mapping[JobKind, Stage],
        period_s: float,
        steps: Mapping[Stage, Stage] | None = None,
    ) -> None:
        self._ctx = ctx
        self._finishes = dict(finishes)
        # Per-item selection step -> the step that follows it.
        self._steps = dict(steps or {})
        self._period = period_s
        self._hot: set[str] = set()
        self._wake = asyncio.Event()
        # Per job: its current stage's results at the last exact count, and announcements
        # heard since. Until they add up to the plan an announcement's check counts nothing
        # (a count is a temporary consumer on the server, and items end hundreds a second);
        # a lost announcement only leaves the job to the periodic check, which always counts.
        self._counted: dict[str, tuple[str, int]] = {}
        self._heard: dict[str, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Check until ``stop``."""

        async def _ended(msg: Msg) -> None:
            self.announced(msg.subject.rsplit(".", 1)[-1])

        sub = await self._ctx.bus.nc.subscribe(ENDED_SUBJECTS, cb=_ended)
        next_sweep = 0.0
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._period)
                if stop.is_set():
                    return
                await asyncio.sleep(self._DEBOUNCE_S)  # let a burst of endings coalesce
                self._wake.clear()
                hot, self._hot = self._hot, set()
                now = asyncio.get_running_loop().time()
                swept: set[str] = set()
                try:
                    if now >= next_sweep:
                        next_sweep = now + self._period
                        swept = set(await self._ctx.jobs.active())
                        for gone in (self._counted.keys() | self._heard.keys()) - swept:
                            self._counted.pop(gone, None)
                            self._heard.pop(gone, None)
                    for job_id in sorted(hot | swept):
                        await self.check(job_id, exact=job_id in swept)
                except Exception as exc:  # NATS briefly away: try again next period
                    log.warning("tracker_check_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def announced(self, job_id: str) -> None:
        """One of the job's items ended (or has a new result): check the job soon."""
        self._hot.add(job_id)
        self._heard[job_id] = self._heard.get(job_id, 0) + 1
        self._wake.set()

    def _may_be_complete(self, job_id: str, stage: str, planned: int) -> bool:
        """Whether the announcements heard since the last count could complete the stage."""
        counted = self._counted.get(job_id)
        if counted is None or counted[0] != stage:
            return True
        return counted[1] + self._heard.get(job_id, 0) >= planned

    async def _count(self, job_id: str, stage: str, count: Awaitable[int]) -> int:
        # Announcements heard from here on are not in the last count (some may be in this
        # one: counted twice, which only makes the next count come sooner).
        self._heard.pop(job_id, None)
        done = await count
        self._counted[job_id] = (stage, done)
        return done

    async def check(self, job_id: str, exact: bool = True) -> bool:
        """Queue the next stage if the job's current one has every result. Without ``exact``
        (an announcement's check) nothing is counted while the announcements heard since the
        last count cannot add up to the plan."""
        job = await self._ctx.jobs.get(job_id)
        if job is None:
            return False
        if job.state == pb.JOB_STATE_SELECTING and job.phase:
            return await self._next_step(job, exact)
        if job.state != pb.JOB_STATE_RUNNING or job.planned <= 0:
            return False
        stage = self._finishes.get(job_kind(job))
        if stage is None:  # another service finishes this kind
            return False
        if not exact and not self._may_be_complete(job_id, "", job.planned):
            return False
        ended = await self._count(job_id, "", self._ctx.items.count(job_id, ItemKind.OUTCOME))
        if ended < job.planned:
            return False
        if stage is Stage.PLAN:
            # A generation job is reviewed, round by round: its plan stage tops up short cells
            # or hands it to selection. The round's message id makes a repeat a no-op.
            review = job.rounds + 1
            await publish_work(
                self._ctx.bus, stage, pb.JobRef(job_id=job_id, round=review), job_id, "", review
            )
            return True
        # Queued before the job moves, so a crash in between leaves a job that the next sweep
        # moves (the second publish is dropped by its message id); the step's handler waits
        # for the move if it gets the message first.
        await publish_work(self._ctx.bus, stage, pb.JobRef(job_id=job_id), job_id)
        await select(self._ctx.jobs, job_id, stage)
        log.info("job_complete", job_id=job_id, items=ended)
        return True

    async def _next_step(self, job: pb.Job, exact: bool = True) -> bool:
        step = Stage(job.phase)
        following = self._steps.get(step)
        if following is None:  # a whole-job step: its handler moves the job on
            return False
        if not exact and not self._may_be_complete(job.id, step.value, job.phase_planned):
            return False
        result = SELECTION_RESULT[step]
        done = await self._count(job.id, step.value, self._ctx.items.count(job.id, result))
        failed = await self._ctx.items.count_failed(job.id, step)
        self._counted[job.id] = (step.value, done + failed)  # a failure is announced too
        if done + failed < job.phase_planned:
            return False
        await enter_step(self._ctx.bus, self._ctx.jobs, job.id, step, following)
        log.info("step_complete", job_id=job.id, step=step.value, done=done, failed=failed)
        return True
