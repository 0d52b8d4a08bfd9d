"""Completion: a running job whose items have all ended is queued for selection.

Every selector replica runs this check; the CAS on the job's state and the select message's
id make it happen once.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from taxoforge.bus import Stage
from taxoforge.pipeline import publish_work
from taxoforge.service import ServiceContext
from taxoforge.store import ItemKind
from taxoforge.v1 import common_pb2 as pb

__all__ = ["CompletionTracker"]

log = structlog.get_logger(__name__)


class CompletionTracker:
    """Checks active jobs every ``period_s`` seconds."""

    def __init__(self, ctx: ServiceContext, period_s: float) -> None:
        self._ctx = ctx
        self._period = period_s

    async def run(self, stop: asyncio.Event) -> None:
        """Check until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._period)
            if stop.is_set():
                return
            try:
                for job_id in await self._ctx.jobs.active():
                    await self.check(job_id)
            except Exception as exc:  # NATS briefly away: try again next period
                log.warning("tracker_check_failed", error=f"{type(exc).__name__}: {exc}")

    async def check(self, job_id: str) -> bool:
        """Queue selection if every planned item of a running job has ended."""
        job = await self._ctx.jobs.get(job_id)
        if job is None or job.state != pb.JOB_STATE_RUNNING or job.planned <= 0:
            return False
        ended = await self._ctx.items.count(job_id, ItemKind.OUTCOME)
        if ended < job.planned:
            return False
        await publish_work(self._ctx.bus, Stage.SELECT, pb.JobRef(job_id=job_id), job_id)

        def _selecting(j: pb.Job) -> bool:
            if j.state != pb.JOB_STATE_RUNNING:
                return False
            j.state = pb.JOB_STATE_SELECTING
            return True

        await self._ctx.jobs.update(job_id, _selecting)
        log.info("job_complete", job_id=job_id, items=ended)
        return True
