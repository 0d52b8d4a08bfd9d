"""Wires the taxonomy service into the shared service lifecycle."""

from __future__ import annotations

import grpc

from services.taxonomy.catalog import Catalog
from services.taxonomy.servicer import TaxonomyServicer
from services.taxonomy.settings import TaxonomySettings
from services.taxonomy.worker import PlanHandler
from taxoforge.bus import Stage
from taxoforge.bus.worker import Route
from taxoforge.pipeline import dead_letter_recorder
from taxoforge.service import ServiceContext, ServiceParts, run_service
from taxoforge.v1 import taxonomy_pb2, taxonomy_pb2_grpc

__all__ = ["build", "main"]

SERVICE_NAME = taxonomy_pb2.DESCRIPTOR.services_by_name["TaxonomyService"].full_name


def build(ctx: ServiceContext) -> ServiceParts:
    """The taxonomy servicer and the plan stage."""
    settings = ctx.settings
    extra = settings.taxonomy_dir if isinstance(settings, TaxonomySettings) else None
    catalog = Catalog(extra)
    servicer = TaxonomyServicer(catalog)

    def register(server: grpc.aio.Server) -> None:
        taxonomy_pb2_grpc.add_TaxonomyServiceServicer_to_server(servicer, server)

    return ServiceParts(
        register=register,
        service_names=[SERVICE_NAME],
        routes={
            Stage.PLAN: Route(
                PlanHandler(ctx.bus, ctx.jobs, catalog),
                dead_letter_recorder(ctx.jobs, ctx.items),
            )
        },
    )


def main() -> None:
    """``python -m services.taxonomy``."""
    run_service("taxonomy", build, TaxonomySettings)
