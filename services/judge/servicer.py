"""JudgeService over gRPC: synchronous judging for other systems; logic is in core."""

from __future__ import annotations

import asyncio

from services.judge.core import Judge, build_judgment
from taxoforge.errors import PermanentError
from taxoforge.grpc_server import Context
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import judge_pb2 as jpb
from taxoforge.v1 import judge_pb2_grpc

__all__ = ["JudgeServicer"]


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):
    """Scores a set of candidates and returns the judgment."""

    def __init__(self, judge: Judge) -> None:
        self._judge = judge

    async def JudgeCandidates(
        self, request: jpb.JudgeCandidatesRequest, context: Context
    ) -> pb.Judgment:
        if not request.judge.model:
            raise PermanentError("judge.model is required")
        if not request.candidates.responses:
            raise PermanentError("candidates.responses is empty: nothing to judge")
        instruction = request.candidates.instruction
        scores = await asyncio.gather(
            *(
                self._judge.score(instruction, r, request.judge)
                for r in request.candidates.responses
            )
        )
        return build_judgment(request.candidates, scores, request.min_margin)
