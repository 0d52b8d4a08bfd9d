"""SelectorService over gRPC: a job's datasets and selection report; logic is in the steps."""

from __future__ import annotations

from taxoforge.context import ServiceContext
from taxoforge.errors import ConflictError, NotFoundError
from taxoforge.grpc_server import Context
from taxoforge.jobs.model import state_name
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import selector_pb2 as spb
from taxoforge.v1 import selector_pb2_grpc

__all__ = ["SelectorServicer"]


class SelectorServicer(selector_pb2_grpc.SelectorServiceServicer):
    """Reports a job's selection."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def SelectJob(
        self, request: spb.SelectJobRequest, context: Context
    ) -> spb.SelectJobResponse:
        job = await self._ctx.jobs.get(request.job_id)
        if job is None:
            raise NotFoundError(f"job {request.job_id!r} does not exist")
        if job.state == pb.JOB_STATE_SUCCEEDED:
            return spb.SelectJobResponse(datasets=job.datasets, report=job.selection)
        step = f" (step {job.phase})" if job.phase else ""
        raise ConflictError(
            f"job {job.id} is {state_name(job.state)}{step}; its datasets exist once it has "
            "succeeded"
        )
