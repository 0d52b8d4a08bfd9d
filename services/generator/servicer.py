"""GeneratorService over gRPC: synchronous generation for other systems; logic is in instructions
and responses."""

from __future__ import annotations

import asyncio

from services.generator.instructions import InstructionWriter
from services.generator.responses import ResponseWriter
from taxoforge.errors import PermanentError
from taxoforge.grpc_server import Context
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import generator_pb2 as gpb
from taxoforge.v1 import generator_pb2_grpc

__all__ = ["GeneratorServicer"]


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    """One instruction, or one instruction's candidates, per call."""

    def __init__(self, instructions: InstructionWriter, responses: ResponseWriter) -> None:
        self._instructions = instructions
        self._responses = responses

    async def GenerateInstruction(
        self, request: gpb.GenerateInstructionRequest, context: Context
    ) -> pb.Instruction:
        if not request.generator.model:
            raise PermanentError("generator.model is required")
        recipe = pb.Recipe(models=pb.RoleModels(generator=request.generator))
        return await self._instructions.instruction(request.seed, recipe)

    async def GenerateResponses(
        self, request: gpb.GenerateResponsesRequest, context: Context
    ) -> pb.Candidates:
        if not request.responders:
            raise PermanentError("at least one responder model is required")
        recipe = pb.Recipe(models=pb.RoleModels(responders=request.responders))
        k = request.k or len(request.responders)
        responses = await asyncio.gather(
            *(self._responses.response(request.instruction, recipe, c) for c in range(k))
        )
        return pb.Candidates(instruction=request.instruction, responses=responses)
