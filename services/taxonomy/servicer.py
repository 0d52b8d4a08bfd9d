"""TaxonomyService over gRPC: thin, all logic is in catalog and core."""

from __future__ import annotations

from services.taxonomy.catalog import Catalog, iter_leaves
from services.taxonomy.core import plan_job
from taxoforge.grpc_server import Context
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb
from taxoforge.v1 import taxonomy_pb2_grpc

__all__ = ["TaxonomyServicer"]


class TaxonomyServicer(taxonomy_pb2_grpc.TaxonomyServiceServicer):
    """Lists, reads and plans against the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    async def ListTaxonomies(
        self, request: tpb.ListTaxonomiesRequest, context: Context
    ) -> tpb.ListTaxonomiesResponse:
        out = tpb.ListTaxonomiesResponse()
        for taxonomy in self._catalog.all():
            out.taxonomies.add(
                id=taxonomy.id,
                version=taxonomy.version,
                title=taxonomy.title,
                leaves=sum(1 for _ in iter_leaves(taxonomy.root)),
            )
        return out

    async def GetTaxonomy(self, request: tpb.GetTaxonomyRequest, context: Context) -> pb.Taxonomy:
        return self._catalog.get(request.id)

    async def PlanJob(self, request: tpb.PlanJobRequest, context: Context) -> tpb.PlanJobResponse:
        taxonomy = self._catalog.get(request.recipe.taxonomy_id)
        plan = plan_job(request.recipe, taxonomy, request.job_id or "dry-run")
        out = tpb.PlanJobResponse(
            planned=len(plan.seeds), taxonomy_version=taxonomy.version, cells=plan.cells
        )
        if request.include_seeds:
            out.seeds.extend(plan.seeds)
        return out
