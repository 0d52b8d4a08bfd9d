"""Wires the generator service into the shared service lifecycle."""

from __future__ import annotations

import grpc

from services.generator.instructions import InstructionWriter
from services.generator.responses import ResponseWriter
from services.generator.servicer import GeneratorServicer
from services.generator.settings import GeneratorSettings
from services.generator.worker import InstructHandler, RefineHandler, RespondHandler
from taxoforge.context import ServiceContext, run_service
from taxoforge.service import ServiceParts
from taxoforge.stage import stage_routes
from taxoforge.v1 import generator_pb2, generator_pb2_grpc

__all__ = ["build", "main"]

SERVICE_NAME = generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name


def build(ctx: ServiceContext) -> ServiceParts:
    """The generator servicer and the instruct and respond stages."""
    settings = ctx.settings
    if not isinstance(settings, GeneratorSettings):
        settings = GeneratorSettings()
    thresholds = settings.thresholds()
    instructions = InstructionWriter(ctx.llm, settings.instruction_attempts, thresholds)
    responses = ResponseWriter(
        ctx.llm, settings.response_attempts, settings.candidate_redraws, thresholds
    )
    servicer = GeneratorServicer(instructions, responses)

    def register(server: grpc.aio.Server) -> None:
        generator_pb2_grpc.add_GeneratorServiceServicer_to_server(servicer, server)

    respond = RespondHandler(ctx, responses)
    return ServiceParts(
        register=register,
        service_names=[SERVICE_NAME],
        routes=stage_routes(
            ctx,
            # Depth first: an instruction's candidates are made by the message that wrote it.
            InstructHandler(ctx, instructions, respond),
            respond,
            RefineHandler(ctx, instructions),
        ),
    )


def main() -> None:
    """``python -m services.generator``."""
    run_service("generator", build, GeneratorSettings)
