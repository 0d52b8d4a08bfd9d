"""Wires the taxonomy service into the shared service lifecycle."""

from __future__ import annotations

import asyncio

import grpc

from services.taxonomy.expansion import Expander
from services.taxonomy.induction import Encoder
from services.taxonomy.servicer import TaxonomyServicer
from services.taxonomy.settings import BUILTIN_DIR, TaxonomySettings
from services.taxonomy.versions import TaxonomyStore
from services.taxonomy.worker import ApplyHandler, ExpandHandler, InduceHandler, PlanHandler
from taxoforge.bus import Stage
from taxoforge.context import ServiceContext, run_service
from taxoforge.jobs.model import JobKind
from taxoforge.service import ServiceParts
from taxoforge.stage import stage_routes
from taxoforge.tracker import CompletionTracker
from taxoforge.v1 import taxonomy_pb2, taxonomy_pb2_grpc

__all__ = ["build", "main"]

SERVICE_NAME = taxonomy_pb2.DESCRIPTOR.services_by_name["TaxonomyService"].full_name


def build(ctx: ServiceContext) -> ServiceParts:
    """The taxonomy servicer; the plan, expand, induce and apply stages; the built-ins."""
    settings = ctx.settings
    folders = [BUILTIN_DIR]
    if isinstance(settings, TaxonomySettings) and settings.taxonomy_dir:
        folders.append(settings.taxonomy_dir)
    store = TaxonomyStore(ctx.bus)
    servicer = TaxonomyServicer(ctx, store)

    def register(server: grpc.aio.Server) -> None:
        taxonomy_pb2_grpc.add_TaxonomyServiceServicer_to_server(servicer, server)

    async def import_builtins(stop: asyncio.Event) -> None:
        # Files not imported before become versions (every replica may try; each file lands once).
        await store.import_files(folders)

    # Generation jobs are reviewed here (their plan's cells topped up, then selected).
    tracker = CompletionTracker(
        ctx,
        {JobKind.GENERATE: Stage.PLAN, JobKind.EXPAND: Stage.APPLY, JobKind.INDUCE: Stage.APPLY},
        1.0,
    )
    return ServiceParts(
        register=register,
        service_names=[SERVICE_NAME],
        routes=stage_routes(
            ctx,
            PlanHandler(ctx, store),
            ExpandHandler(ctx, store, Expander(ctx.llm)),
            InduceHandler(ctx, Encoder(ctx.llm)),
            ApplyHandler(ctx, store),
        ),
        startup=[import_builtins],
        background=[tracker.run],
    )


def main() -> None:
    """``python -m services.taxonomy``."""
    run_service("taxonomy", build, TaxonomySettings)
