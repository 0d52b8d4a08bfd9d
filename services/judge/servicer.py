"""JudgeService over gRPC: synchronous judging for other systems; logic is in panel."""

from __future__ import annotations

import asyncio
import random

from services.judge.panel import Judge, Panel
from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.grpc_server import Context
from taxoforge.jobs.store import JobStore
from taxoforge.pipeline import bind_job
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import judge_pb2 as jpb
from taxoforge.v1 import judge_pb2_grpc

__all__ = ["JudgeServicer"]

_MAX_BATCH = 64


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):
    """Judges one instruction's candidates, or a small batch of them, right away."""

    def __init__(self, judge: Judge, jobs: JobStore | None = None) -> None:
        self._panel = Panel(judge)
        self._jobs = jobs

    async def JudgeCandidates(
        self, request: jpb.JudgeCandidatesRequest, context: Context
    ) -> pb.Judgment:
        return await self._one(request)

    async def JudgeBatch(
        self, request: jpb.JudgeBatchRequest, context: Context
    ) -> jpb.JudgeBatchResponse:
        if len(request.requests) > _MAX_BATCH:
            raise PermanentError(f"at most {_MAX_BATCH} items per batch; queue a job for more")
        if request.job_id and self._jobs is not None:
            # A job's own judging (its golden set): its calls are the job's, like its stages'.
            if await self._jobs.get_cached(request.job_id) is None:
                raise NotFoundError(f"job {request.job_id!r} does not exist")
            bind_job(self._jobs, request.job_id)
        judgments = await asyncio.gather(*(self._one(r) for r in request.requests))
        if request.job_id and self._jobs is not None:
            await self._jobs.write_usage(request.job_id)  # the job's figures include them now
        return jpb.JudgeBatchResponse(judgments=judgments)

    async def _one(self, request: jpb.JudgeCandidatesRequest) -> pb.Judgment:
        if not request.judge.model:
            raise PermanentError("judge.model is required")
        responses = request.candidates.responses
        if len(responses) < 1 or (request.config.mode == "pairwise" and len(responses) < 2):
            raise PermanentError("give at least one response (two for pairwise judging)")
        if request.config.mode not in ("", "rubric", "pairwise"):
            raise PermanentError(f"mode {request.config.mode!r} is not rubric or pairwise")
        if len({r.id for r in responses}) != len(responses) or not all(r.id for r in responses):
            raise PermanentError("every response needs a distinct id")
        return await self._panel.run(
            request.candidates,
            request.judge,
            request.config,
            request.min_margin,
            random.Random(),
            contrastive=any(r.responder < 0 for r in responses),
        )
