"""The select stage: a complete job's datasets are written."""

from __future__ import annotations

import structlog

from services.selector.selection import SelectionRunner
from taxoforge.bus.worker import Delivery
from taxoforge.pipeline import active_job
from taxoforge.store import JobStore
from taxoforge.v1 import common_pb2 as pb

__all__ = ["SelectHandler"]


class SelectHandler:
    """JobRef in, datasets out."""

    def __init__(self, jobs: JobStore, runner: SelectionRunner) -> None:
        self._jobs = jobs
        self._runner = runner

    async def __call__(self, delivery: Delivery) -> None:
        ref = pb.JobRef.FromString(delivery.data)
        structlog.contextvars.bind_contextvars(job_id=ref.job_id)
        job = await active_job(self._jobs, ref.job_id)
        if job is None:
            return
        await self._runner.run(job)
