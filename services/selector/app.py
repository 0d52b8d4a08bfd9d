"""Wires the selector service into the shared service lifecycle."""

from __future__ import annotations

import grpc

from services.selector.selection import SelectionRunner
from services.selector.servicer import SelectorServicer
from services.selector.settings import SelectorSettings
from services.selector.worker import SelectHandler
from taxoforge.bus import Stage
from taxoforge.bus.worker import Route
from taxoforge.pipeline import dead_letter_recorder
from taxoforge.service import ServiceContext, ServiceParts, run_service
from taxoforge.store import JobKind
from taxoforge.tracker import CompletionTracker
from taxoforge.v1 import selector_pb2, selector_pb2_grpc

__all__ = ["build", "main"]

SERVICE_NAME = selector_pb2.DESCRIPTOR.services_by_name["SelectorService"].full_name


def build(ctx: ServiceContext) -> ServiceParts:
    """The selector servicer, the select stage and the completion tracker."""
    settings = ctx.settings
    if isinstance(settings, SelectorSettings):
        period, judge_addr = settings.tracker_period_s, settings.judge_addr
    else:
        period, judge_addr = 1.0, SelectorSettings.model_fields["judge_addr"].default
    runner = SelectionRunner(ctx, judge_addr)
    servicer = SelectorServicer(ctx.jobs, runner)

    def register(server: grpc.aio.Server) -> None:
        selector_pb2_grpc.add_SelectorServiceServicer_to_server(servicer, server)

    return ServiceParts(
        register=register,
        service_names=[SERVICE_NAME],
        routes={
            Stage.SELECT: Route(
                SelectHandler(ctx.jobs, runner), dead_letter_recorder(ctx.jobs, ctx.items)
            )
        },
        background=[CompletionTracker(ctx, {JobKind.GENERATE: Stage.SELECT}, period).run],
    )


def main() -> None:
    """``python -m services.selector``."""
    run_service("selector", build, SelectorSettings)
