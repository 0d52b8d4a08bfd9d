"""Taxonomies: list and read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from gateway.deps import BackendDep
from taxoforge.protojson import to_dict

router = APIRouter(prefix="/v1/taxonomies", tags=["taxonomies"])


@router.get("", summary="List taxonomies")
async def list_taxonomies(backend: BackendDep) -> dict[str, Any]:
    resp = await backend.taxonomies()
    return to_dict(resp)


@router.get("/{taxonomy_id}", summary="Read a taxonomy tree")
async def get_taxonomy(
    backend: BackendDep, taxonomy_id: str = Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
) -> dict[str, Any]:
    taxonomy = await backend.taxonomy(taxonomy_id)
    return to_dict(taxonomy)
