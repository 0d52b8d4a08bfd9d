"""Wires the selector service into the shared service lifecycle."""

from __future__ import annotations

import asyncio

import grpc

from services.selector.clustering import Clusterer
from services.selector.prepare import Preparer
from services.selector.selection import SelectionRunner
from services.selector.servicer import SelectorServicer
from services.selector.settings import SelectorSettings
from services.selector.tag_vectors import TagPrefetch
from services.selector.worker import StepHandler, TagHandler
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext, run_service
from taxoforge.service import ServiceParts
from taxoforge.stage import stage_routes
from taxoforge.tokens import count_tokens
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
    # The tags this replica tags are embedded ahead of the cluster step (when it runs here).
    prefetch = TagPrefetch()
    clusterer = Clusterer(ctx, prefetch)
    runner = SelectionRunner(ctx)
    servicer = SelectorServicer(ctx, settings.selection_defaults().import_limits)

    def register(server: grpc.aio.Server) -> None:
        selector_pb2_grpc.add_SelectorServiceServicer_to_server(servicer, server)

    # Generation jobs come to selection from their review (the taxonomy service); this
    # tracker moves selecting jobs from step to step.
    tracker = CompletionTracker(
        ctx,
        {},
        settings.tracker_period_s,
        steps={Stage.TAG: Stage.CLUSTER, Stage.COMPARE: Stage.SELECT},
    )
    return ServiceParts(
        register=register,
        service_names=[SERVICE_NAME],
        routes=stage_routes(
            ctx,
            StepHandler(ctx, Stage.PREPARE, preparer.run),
            TagHandler(ctx, prefetch),
            StepHandler(ctx, Stage.CLUSTER, clusterer.run),
            StepHandler(ctx, Stage.SELECT, runner.run),
        ),
        background=[tracker.run],
        startup=[load_ahead],
    )


async def load_ahead(stop: asyncio.Event) -> None:
    """The token table (o200k, ~0.3 CPU-s to load), loaded before the replica takes work
    rather than by its first job's prepare step, which loads it in any case (it counts the
    tokens of what it keeps). In a thread, so the connection to NATS is kept meanwhile.

    Not pyarrow's pandas, where it is installed (the development extras): memory a selector
    would otherwise hold only from its first select step on, through every cluster step
    (the replica's peak)."""
    del stop
    await asyncio.to_thread(count_tokens, "warm")


def main() -> None:
    """``python -m services.selector``."""
    run_service("selector", build, SelectorSettings)
