"""Jobs: submit, watch, cancel, download; and dry-run plans."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from gateway.backend import Backend
from gateway.deps import BackendDep, SubmissionDep, TenantDep, authenticated
from gateway.files import FILE_HEADERS, media_type
from gateway.schemas import RecipeSpec, recipe_to_proto
from gateway.tenants import Tenant
from gateway.views import ERROR_RESPONSES, REPLAYED_RESPONSE, JobView, job_view, submitted_view
from taxoforge.bus.topology import KV_JOBS
from taxoforge.errors import NotFoundError, PermanentError
from taxoforge.jobs.model import TERMINAL_STATES
from taxoforge.jobs.progress import job_progress
from taxoforge.protojson import to_dict
from taxoforge.selection import EXPORT_FORMATS
from taxoforge.store import scan
from taxoforge.v1 import common_pb2 as pb

router = APIRouter(
    prefix="/v1", tags=["jobs"], dependencies=authenticated, responses=ERROR_RESPONSES
)


class JobList(BaseModel):
    jobs: list[JobView]


JobId = Annotated[str, Path(pattern=r"^j-[0-9a-f]{6,40}$", description="A job id (j-...)")]


@router.post(
    "/jobs",
    status_code=201,
    response_model=JobView,
    summary="Submit a job",
    responses=REPLAYED_RESPONSE,
)
async def create_job(spec: RecipeSpec, submission: SubmissionDep) -> JobView:
    """Validate the recipe, record the job and queue it. With an ``Idempotency-Key`` header a
    retried submission returns the job it already created (200) instead of a second one."""
    recipe = recipe_to_proto(spec, submission.models)
    backend, tenant = submission.backend, submission.tenant
    progress, created = await backend.create_job(recipe, submission.key, tenant)
    return submitted_view(progress, created, submission.response)


@router.get("/jobs", response_model=JobList, summary="Your jobs, newest first")
async def list_jobs(
    backend: BackendDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    """The tenant's jobs (every kind), newest first, each as GET /v1/jobs/{id} shows it."""
    jobs = await tenant_jobs(backend, tenant, limit)
    return JobList(jobs=[job_view(progress) for progress in jobs])


async def tenant_jobs(backend: Backend, tenant: Tenant, limit: int) -> list[pb.JobProgress]:
    """``tenant``'s newest ``limit`` jobs with their progress (another tenant's never)."""
    records: list[pb.Job] = []
    async for key, value in scan(backend.bus, KV_JOBS, "job.*"):
        if key.count(".") != 1 or not value:
            continue
        job = pb.Job()
        job.ParseFromString(value)
        if job.tenant == tenant.name:
            records.append(job)
    records.sort(key=lambda j: (j.created_at_ms, j.id), reverse=True)
    wanted = records[:limit]
    found = await asyncio.gather(
        *(job_progress(backend.jobs, backend.items, job.id) for job in wanted)
    )
    return [p for p in found if p is not None and p.job.tenant == tenant.name]


@router.get("/jobs/{job_id}", response_model=JobView, summary="A job's state and progress")
async def get_job(job_id: JobId, backend: BackendDep, tenant: TenantDep) -> JobView:
    return job_view(await backend.progress(job_id, tenant))


@router.get(
    "/jobs/{job_id}/events",
    summary="A job's progress as Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: JobId,
    backend: BackendDep,
    tenant: TenantDep,
    interval_s: Annotated[float, Query(ge=0.2, le=60)] = 1.0,
) -> StreamingResponse:
    """One ``progress`` event (a JobView) whenever the job changes, checked every ``interval_s``
    seconds, and a last ``end`` event when it finishes; then the stream closes."""
    return await event_stream(backend, job_id, tenant, interval_s)


async def event_stream(
    backend: Backend, job_id: str, tenant: Tenant, interval_s: float
) -> StreamingResponse:
    """A job's progress events (GET /v1/jobs/{id}/events, and the console's live pages)."""
    first = await backend.progress(job_id, tenant)  # 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        progress, last = first, ""
        while True:
            view = job_view(progress)
            body = view.model_dump_json()
            if body != last:
                last = body
                yield f"event: progress\ndata: {body}\n\n".encode()
            if progress.job.state in TERMINAL_STATES:
                yield f"event: end\ndata: {body}\n\n".encode()
                return
            await asyncio.sleep(interval_s)
            progress = await backend.progress(job_id, tenant)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@router.post("/jobs/{job_id}:cancel", response_model=JobView, summary="Cancel a job")
async def cancel_job(job_id: JobId, backend: BackendDep, tenant: TenantDep) -> JobView:
    return job_view(await backend.cancel(job_id, tenant))


@router.get(
    "/jobs/{job_id}/datasets/{kind}",
    summary="Download an export (JSON Lines or Parquet)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/jsonl": {}, "application/vnd.apache.parquet": {}}}},
)
async def get_dataset(
    job_id: JobId,
    backend: BackendDep,
    tenant: TenantDep,
    kind: str = Path(pattern="^(" + "|".join(EXPORT_FORMATS) + ")$"),
    format: Annotated[Literal["jsonl", "parquet"], Query()] = "jsonl",
) -> StreamingResponse:
    """sft and preference are TRL's conversational shapes; openai-sft and openai-dpo are
    OpenAI fine-tuning files; alpaca and sharegpt their classic shapes."""
    info, chunks = await backend.files.dataset(job_id, kind, format, tenant)
    return StreamingResponse(
        chunks,
        media_type=media_type(format),
        headers={
            "Content-Disposition": f'attachment; filename="{job_id}-{kind}.{format}"',
            "X-Records": str(info.records),
            "X-Content-SHA256": info.sha256,
        },
    )


@router.get(
    "/jobs/{job_id}/files/{path:path}",
    summary="Download any file of a finished job (README.md, images/, data/, meta/)",
    response_class=StreamingResponse,
)
async def get_file(
    job_id: JobId, path: str, backend: BackendDep, tenant: TenantDep
) -> StreamingResponse:
    """The dataset card (README.md with its images/), every export under data/, and
    meta/provenance.jsonl and meta/dropped.jsonl: a Hugging Face dataset folder, file by file.
    A job that failed with nothing to select keeps meta/dropped.jsonl: why each item left."""
    info, chunks = await backend.files.file(job_id, path, tenant)
    name = path.rsplit("/", 1)[-1]
    return StreamingResponse(
        chunks,
        media_type=media_type(info.format),
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Records": str(info.records),
            "X-Content-SHA256": info.sha256,
            **FILE_HEADERS,
        },
    )


@router.get(
    "/jobs/{job_id}/records/{item_id}",
    summary="Where a record came from and why it was kept (or dropped)",
)
async def get_record(
    job_id: JobId,
    backend: BackendDep,
    tenant: TenantDep,
    item_id: str = Path(pattern=r"^[A-Za-z0-9_.-]{1,80}$"),
) -> dict[str, Any]:
    """Looks the record up by its id (as in the exports: "<job>/<item>", or the item part)."""
    return await backend.files.record(job_id, item_id, tenant)


@router.post("/plans", summary="Dry-run a recipe: how its seeds would be spread")
async def plan(
    spec: RecipeSpec, request: Request, backend: BackendDep, tenant: TenantDep
) -> dict[str, Any]:
    recipe = recipe_to_proto(spec, request.app.state.models)
    try:
        resp = await backend.plan(recipe, tenant)
    except NotFoundError as exc:  # a name in the body, not the URL, is wrong: 422, as for jobs
        raise PermanentError(str(exc)) from exc
    return to_dict(resp)
