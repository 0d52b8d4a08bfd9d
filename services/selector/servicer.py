"""SelectorService over gRPC: a job's datasets and selection report, and a benchmark file's
check before it is registered; logic is in the steps and in ``benchmarks``."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from services.selector.benchmarks import scan_benchmark
from services.selector.imports import ImportLimits
from services.selector.workfiles import download
from taxoforge.context import ServiceContext
from taxoforge.datasets import DatasetStore
from taxoforge.errors import ConflictError, NotFoundError
from taxoforge.grpc_server import Context
from taxoforge.jobs.model import state_name
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import selector_pb2 as spb
from taxoforge.v1 import selector_pb2_grpc

__all__ = ["SelectorServicer"]


class SelectorServicer(selector_pb2_grpc.SelectorServiceServicer):
    """Reports a job's selection."""

    def __init__(self, ctx: ServiceContext, limits: ImportLimits | None = None) -> None:
        self._ctx = ctx
        self._limits = limits or ImportLimits()

    async def CheckBenchmark(
        self, request: spb.CheckBenchmarkRequest, context: Context
    ) -> spb.CheckBenchmarkResponse:
        """Read the stored file as decontamination will, and say what it yields."""
        with tempfile.TemporaryDirectory(prefix="taxoforge-bench-check-") as tmp:
            path = Path(tmp) / "benchmark"
            await download(DatasetStore(self._ctx.bus), request.object_name, path)
            scan = await asyncio.to_thread(scan_benchmark, path, self._limits)
        return spb.CheckBenchmarkResponse(
            prompts=scan.prompts, rows=scan.rows, refusal=scan.refusal() or ""
        )

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
