"""SelectorService over gRPC: selection on demand; logic is in core and selection."""

from __future__ import annotations

from services.selector.selection import SelectionRunner
from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.grpc_server import Context
from taxoforge.store import JobStore, state_name
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import selector_pb2 as spb
from taxoforge.v1 import selector_pb2_grpc

__all__ = ["SelectorServicer"]


class SelectorServicer(selector_pb2_grpc.SelectorServiceServicer):
    """Runs (or reports) a job's selection."""

    def __init__(self, jobs: JobStore, runner: SelectionRunner) -> None:
        self._jobs = jobs
        self._runner = runner

    async def SelectJob(
        self, request: spb.SelectJobRequest, context: Context
    ) -> spb.SelectJobResponse:
        job = await self._jobs.get(request.job_id)
        if job is None:
            raise NotFoundError(f"job {request.job_id!r} does not exist")
        if job.state == pb.JOB_STATE_SUCCEEDED:
            return spb.SelectJobResponse(datasets=job.datasets, report=job.selection)
        if job.state not in (pb.JOB_STATE_RUNNING, pb.JOB_STATE_SELECTING):
            raise PermanentError(
                f"job {job.id} is {state_name(job.state)}; only a running job can be selected"
            )
        datasets, report = await self._runner.run(job)
        return spb.SelectJobResponse(datasets=datasets, report=report)
