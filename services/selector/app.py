"""Wires the selector service into the shared service lifecycle."""

from __future__ import annotations

import grpc

from services.selector.clustering import Clusterer
from services.selector.prepare import Preparer
from services.selector.selection import SelectionRunner
from services.selector.servicer import SelectorServicer
from services.selector.settings import SelectorSettings
from services.selector.worker import StepHandler, TagHandler
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
    """The selector servicer, the selection steps and the tracker that moves jobs through them."""
    settings = ctx.settings
    if not isinstance(settings, SelectorSettings):
        settings = SelectorSettings()
    preparer = Preparer(ctx, settings.selection_defaults(), settings.judge_addr)
    clusterer = Clusterer(ctx)
    runner = SelectionRunner(ctx)
    servicer = SelectorServicer(ctx)
    dead = dead_letter_recorder(ctx.jobs, ctx.items)

    def register(server: grpc.aio.Server) -> None:
        selector_pb2_grpc.add_SelectorServiceServicer_to_server(servicer, server)

    tracker = CompletionTracker(
        ctx,
        {JobKind.GENERATE: Stage.PREPARE},
        settings.tracker_period_s,
        steps={Stage.TAG: Stage.CLUSTER, Stage.COMPARE: Stage.SELECT},
    )
    return ServiceParts(
        register=register,
        service_names=[SERVICE_NAME],
        routes={
            Stage.PREPARE: Route(StepHandler(ctx.jobs, Stage.PREPARE, preparer.run), dead),
            Stage.TAG: Route(TagHandler(ctx), dead),
            Stage.CLUSTER: Route(StepHandler(ctx.jobs, Stage.CLUSTER, clusterer.run), dead),
            Stage.SELECT: Route(StepHandler(ctx.jobs, Stage.SELECT, runner.run), dead),
        },
        background=[tracker.run],
    )


def main() -> None:
    """``python -m services.selector``."""
    run_service("selector", build, SelectorSettings)
