"""The console's records pages: a finished job's records with filters and paging, and each
record's provenance."""

from __future__ import annotations

import asyncio
import hashlib
import math
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.backend import Backend
from gateway.deps import BackendDep
from gateway.tenants import Tenant
from gateway.ui.index import RecordFilter, RecordIndex, build_index
from gateway.ui.jobs import known_job_id
from gateway.ui.render import render
from gateway.ui.session import UiTenant
from taxoforge.errors import ConflictError, NotFoundError
from taxoforge.v1 import common_pb2 as pb

__all__ = ["Indexes", "router"]

log = structlog.get_logger(__name__)

router = APIRouter()

PER_PAGE = 50
# The files an index is built from: (kind, format) in the job's datasets.
_SOURCES = {
    "provenance": ("provenance", "jsonl"),
    "dropped": ("dropped", "jsonl"),
    "sft": ("sft", "jsonl"),
    "preference": ("preference", "jsonl"),
}


class Indexes:
    """Each finished job's records index, built on first use and kept in the cache folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def sources(job: pb.Job) -> dict[str, pb.DatasetInfo]:
        """The job's files an index reads, by role."""
        out = {}
        for role, (kind, fmt) in _SOURCES.items():
            info = next((d for d in job.datasets if d.kind == kind and d.format == fmt), None)
            if info is not None:
                out[role] = info
        return out

    def path(self, job: pb.Job) -> Path:
        """Where the index of ``job`` lives: its id and its files' checksums."""
        digest = hashlib.sha256()
        for role, info in sorted(self.sources(job).items()):
            digest.update(f"{role}:{info.sha256}:{info.bytes}\n".encode())
        return self.folder / f"{job.id}-{digest.hexdigest()[:24]}.sqlite"

    async def get(self, backend: Backend, job: pb.Job, tenant: Tenant) -> RecordIndex:
        """The index of ``tenant``'s finished ``job``, built now when there is none."""
        sources = self.sources(job)
        if "provenance" not in sources and "dropped" not in sources:
            raise ConflictError(
                f"job {job.id} has no records yet: they are listed once it has finished"
            )
        path = self.path(job)
        if path.exists():
            return RecordIndex(path)
        lock = self._locks.setdefault(job.id, asyncio.Lock())
        async with lock:
            if not path.exists():
                await self._build(backend, job, tenant, sources, path)
        self._locks.pop(job.id, None)
        return RecordIndex(path)

    async def _build(
        self,
        backend: Backend,
        job: pb.Job,
        tenant: Tenant,
        sources: dict[str, pb.DatasetInfo],
        path: Path,
    ) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.folder) as tmp:
            files: dict[str, Path] = {}
            for role, info in sources.items():
                local = Path(tmp) / f"{role}.jsonl"
                # Through the same tenant check as GET /v1/jobs/{id}/files/{path}.
                _, chunks = await backend.files.file(
                    job.id, info.object_name.removeprefix(f"{job.id}/"), tenant
                )
                with local.open("wb") as fh:
                    async for chunk in chunks:
                        fh.write(chunk)
                files[role] = local
            await asyncio.to_thread(
                build_index,
                path,
                files.get("provenance"),
                files.get("dropped"),
                files.get("sft"),
                files.get("preference"),
            )
        log.info("records_index_built", job_id=job.id, path=str(path))


def indexes(request: Request) -> Indexes:
    """The app's Indexes (one per gateway process), made on first use."""
    state = request.app.state
    found: Indexes | None = getattr(state, "console_indexes", None)
    if found is None:
        settings = getattr(state, "settings", None)
        folder = getattr(settings, "console_cache_dir", "") or str(
            Path(tempfile.gettempdir()) / "taxoforge-console"
        )
        found = Indexes(Path(folder))
        state.console_indexes = found
    return found


def _float(value: str | None) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


async def _job(backend: Backend, job_id: str, tenant: Tenant) -> pb.Job:
    # Another tenant's job does not exist (404), as on the REST API.
    progress = await backend.progress(known_job_id(job_id), tenant)
    return progress.job


Text = Annotated[str, Query(max_length=300)]


@router.get("/jobs/{job_id}/records")
async def records_page(
    request: Request,
    job_id: str,
    tenant: UiTenant,
    backend: BackendDep,
    node: Text = "",
    language: Text = "",
    difficulty: Text = "",
    cluster: Text = "",
    status: Text = "",
    reason: Text = "",
    score_min: Annotated[str | None, Query(max_length=40)] = None,
    score_max: Annotated[str | None, Query(max_length=40)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    """A page of the job's records, filtered: one indexed query."""
    job = await _job(backend, job_id, tenant)
    index = await indexes(request).get(backend, job, tenant)
    wanted = RecordFilter(
        node=node,
        language=language,
        difficulty=difficulty,
        cluster=cluster,
        status=status if status in ("kept", "dropped") else "",  # type: ignore[arg-type]
        reason=reason,
        score_min=_float(score_min),
        score_max=_float(score_max),
    )
    result, facets = await asyncio.to_thread(
        lambda: (index.page(wanted, page, PER_PAGE), index.facets())
    )
    query: dict[str, Any] = {
        "node": node,
        "language": language,
        "difficulty": difficulty,
        "cluster": cluster,
        "status": wanted.status,
        "reason": reason,
        "score_min": score_min or "",
        "score_max": score_max or "",
    }
    kept_query = {k: v for k, v in query.items() if v}

    def page_url(number: int) -> str:
        return f"/ui/jobs/{job.id}/records?" + urlencode({**kept_query, "page": number})

    return render(
        request,
        "records.html",
        job_id=job.id,
        job_name=job.recipe.name,
        result=result,
        facets=facets,
        query=query,
        previous_url=page_url(result.page - 1) if result.page > 1 else None,
        next_url=page_url(result.page + 1) if result.page < result.pages else None,
    )


@router.get("/jobs/{job_id}/records/{item_id}")
async def record_page(
    request: Request, job_id: str, item_id: str, tenant: UiTenant, backend: BackendDep
) -> Response:
    """One record's provenance: where it came from and why it was kept or dropped."""
    job = await _job(backend, job_id, tenant)
    index = await indexes(request).get(backend, job, tenant)
    found = await asyncio.to_thread(index.record, item_id.removeprefix(f"{job.id}/"))
    if found is None:
        raise NotFoundError(f"job {job.id} has no record {item_id!r}")
    provenance: dict[str, Any] = found["provenance"]
    metadata: dict[str, Any] = provenance.get("metadata") or {}
    known = {
        "verdicts",
        "contrastive",
        "preference",
        "judge_rationale",
        "aspects",
        "rubric_rounds",
    }
    return render(
        request,
        "record.html",
        job_id=job.id,
        record=found,
        provenance=provenance,
        metadata=metadata,
        details={k: v for k, v in metadata.items() if k not in known},
        verdicts=metadata.get("verdicts") or {},
        contrastive=metadata.get("contrastive"),
        preference=metadata.get("preference") or {},
        comparative=provenance.get("comparative"),
        rubric_rounds=metadata.get("rubric_rounds") or [],
    )
