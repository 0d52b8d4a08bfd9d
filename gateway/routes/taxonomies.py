"""Taxonomies: read, version, import and export, edit and review, expand and induce."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response

from gateway.deps import BackendDep, TenantDep, authenticated
from gateway.taxonomy_schemas import EditSpec, ExpandSpec, InduceSpec, ReviewSpec
from gateway.views import ERROR_RESPONSES, JobView, job_view
from taxoforge.errors import PermanentError
from taxoforge.protojson import to_dict
from taxoforge.v1 import taxonomy_pb2 as tpb

router = APIRouter(
    prefix="/v1/taxonomies",
    tags=["taxonomies"],
    dependencies=authenticated,
    responses=ERROR_RESPONSES,
)

TaxonomyId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
Version = Annotated[str, Query(pattern=r"^[0-9]*$", description="A version; empty: the latest.")]
_MAX_DOCUMENT = 32 * 1024 * 1024


@router.get("", summary="List taxonomies")
async def list_taxonomies(backend: BackendDep, tenant: TenantDep) -> dict[str, Any]:
    return to_dict(await backend.taxonomies(tenant))


@router.post(
    "",
    status_code=201,
    summary="Import a taxonomy from YAML or JSON",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def import_taxonomy(
    request: Request,
    backend: BackendDep,
    tenant: TenantDep,
    new_version: Annotated[
        bool, Query(description="If the id exists, add the document as its next version.")
    ] = False,
) -> dict[str, Any]:
    """The body is the taxonomy document (see services/taxonomy/data/README.md); errors name
    the line and node. An existing id is refused unless ``new_version=true``."""
    body = await request.body()
    if len(body) > _MAX_DOCUMENT:
        raise PermanentError(f"the document is over {_MAX_DOCUMENT // 2**20} MiB")
    document = body.decode("utf-8", errors="replace")
    taxonomy = await backend.import_taxonomy(document, "upload", new_version, tenant)
    return _summary(taxonomy)


def _summary(taxonomy: Any) -> dict[str, Any]:
    return {
        "id": taxonomy.id,
        "version": taxonomy.version,
        "parent_version": taxonomy.parent_version,
        "change": taxonomy.change,
        "digest": taxonomy.digest,
    }


@router.get("/{taxonomy_id}", summary="Read a taxonomy (the latest version, or ?version=)")
async def get_taxonomy(
    taxonomy_id: TaxonomyId, backend: BackendDep, tenant: TenantDep, version: Version = ""
) -> dict[str, Any]:
    return to_dict(await backend.taxonomy(taxonomy_id, tenant, version))


@router.get("/{taxonomy_id}/versions", summary="A taxonomy's versions, oldest first")
async def list_versions(
    taxonomy_id: TaxonomyId, backend: BackendDep, tenant: TenantDep
) -> dict[str, Any]:
    return to_dict(await backend.versions(taxonomy_id, tenant))


@router.get(
    "/{taxonomy_id}/export",
    summary="A version as a YAML document (import it again, or edit it)",
    # Response, not PlainTextResponse: the YAML is the only 200 body, and errors stay JSON.
    response_class=Response,
    responses={200: {"content": {"application/yaml": {"schema": {"type": "string"}}}}},
)
async def export_taxonomy(
    taxonomy_id: TaxonomyId, backend: BackendDep, tenant: TenantDep, version: Version = ""
) -> Response:
    exported = await backend.export(taxonomy_id, tenant, version)
    return Response(
        exported.yaml,
        media_type="application/yaml",
        headers={
            "Content-Disposition": (
                f'attachment; filename="{taxonomy_id}-v{exported.version}.yaml"'
            ),
            "X-Taxonomy-Version": exported.version,
        },
    )


@router.post("/{taxonomy_id}:edit", summary="Edit nodes; the result is a new version")
async def edit_taxonomy(
    taxonomy_id: TaxonomyId, spec: EditSpec, backend: BackendDep, tenant: TenantDep
) -> dict[str, Any]:
    request = tpb.EditTaxonomyRequest(
        id=taxonomy_id,
        base_version=spec.base_version,
        message=spec.message,
        operations=[op.to_proto() for op in spec.operations],
    )
    return _summary(await backend.edit(request, tenant))


@router.post(
    "/{taxonomy_id}:review", summary="Accept or reject proposed nodes; the result is a new version"
)
async def review_taxonomy(
    taxonomy_id: TaxonomyId, spec: ReviewSpec, backend: BackendDep, tenant: TenantDep
) -> dict[str, Any]:
    request = tpb.ReviewTaxonomyRequest(
        id=taxonomy_id,
        base_version=spec.base_version,
        accept=spec.accept,
        reject=spec.reject,
        accept_rest=spec.accept_rest,
    )
    return _summary(await backend.review(request, tenant))


@router.post(
    "/{taxonomy_id}:expand",
    status_code=201,
    response_model=JobView,
    summary="Expand nodes with an LLM (GLAN): a job whose proposals wait for review",
)
async def expand_taxonomy(
    taxonomy_id: TaxonomyId,
    spec: ExpandSpec,
    request: Request,
    backend: BackendDep,
    tenant: TenantDep,
) -> JobView:
    proto = spec.to_proto(taxonomy_id, request.app.state.models)
    return job_view(await backend.expand(proto, tenant))


induce_router = APIRouter(
    prefix="/v1", tags=["taxonomies"], dependencies=authenticated, responses=ERROR_RESPONSES
)


@induce_router.post(
    "/inductions",
    status_code=201,
    response_model=JobView,
    summary="Induce a taxonomy from your own instructions (CodecLM encode + open tags)",
)
async def induce_taxonomy(
    request: Request,
    backend: BackendDep,
    tenant: TenantDep,
    spec: Annotated[InduceSpec, Body()],
) -> JobView:
    proto = spec.to_proto(request.app.state.models)
    return job_view(await backend.induce(proto, tenant))
