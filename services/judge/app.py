"""Wires the judge service into the shared service lifecycle."""

from __future__ import annotations

import grpc

from services.judge.panel import Judge
from services.judge.servicer import JudgeServicer
from services.judge.settings import JudgeSettings
from services.judge.worker import CompareHandler, JudgeHandler
from taxoforge.context import ServiceContext, run_service
from taxoforge.service import ServiceParts
from taxoforge.stage import stage_routes
from taxoforge.v1 import judge_pb2, judge_pb2_grpc

__all__ = ["build", "main"]

SERVICE_NAME = judge_pb2.DESCRIPTOR.services_by_name["JudgeService"].full_name


def build(ctx: ServiceContext) -> ServiceParts:
    """The judge servicer, the judge stage and TACOS comparative scoring."""
    settings = ctx.settings if isinstance(ctx.settings, JudgeSettings) else JudgeSettings()
    judge = Judge(ctx.llm, settings.verdict_rules())
    servicer = JudgeServicer(judge, ctx.jobs)

    def register(server: grpc.aio.Server) -> None:
        judge_pb2_grpc.add_JudgeServiceServicer_to_server(servicer, server)

    return ServiceParts(
        register=register,
        service_names=[SERVICE_NAME],
        routes=stage_routes(ctx, JudgeHandler(ctx, judge), CompareHandler(ctx, judge)),
    )


def main() -> None:
    """``python -m services.judge``."""
    run_service("judge", build, JudgeSettings)
