"""Selection from data you already have: uploads, the benchmark registry, selection jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from gateway.deps import BackendDep, SubmissionDep, TenantDep, authenticated
from gateway.selection_schemas import SelectJobSpec
from gateway.selection_spec import BENCHMARK_NAME
from gateway.views import ERROR_RESPONSES, REPLAYED_RESPONSE, JobView, submitted_view

router = APIRouter(
    prefix="/v1", tags=["selection"], dependencies=authenticated, responses=ERROR_RESPONSES
)

BenchmarkName = Annotated[str, Path(pattern=BENCHMARK_NAME)]
_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/uploads",
    status_code=201,
    summary="Upload a dataset to select from (JSON Lines, gzipped JSON Lines or Parquet)",
    openapi_extra=_BODY,
)
async def upload(
    request: Request,
    backend: BackendDep,
    tenant: TenantDep,
    name: Annotated[str, Query(min_length=1, max_length=255, description="The file's name.")],
) -> dict[str, Any]:
    """The request body is the file, streamed (``curl --data-binary @train.jsonl``). Returns
    the ``upload`` to name as a selection job's source; the same bytes give the same id."""
    return await backend.files.upload(request.stream(), name, tenant)


@router.put(
    "/benchmarks/{name}",
    status_code=201,
    summary="Register a benchmark's prompts for decontamination",
    openapi_extra=_BODY,
)
async def put_benchmark(
    name: BenchmarkName, request: Request, backend: BackendDep, tenant: TenantDep
) -> dict[str, Any]:
    """The body is the benchmark: JSON Lines, a JSON array or Parquet rows (MT-Bench's
    ``turns``, each turn a prompt; a conversation's user turns under ``messages`` or
    ``conversations``; ``instruction`` with its ``input``; or a prompt/question/problem/query/
    input/text field), or plain text, one prompt per line. Returns the prompts it holds; a
    file that yields no prompt is refused with 422 saying why (and the keys it found). A
    selection lists it in ``selection.decontaminate``."""
    return await backend.files.put_benchmark(name, request.stream(), tenant)


@router.get("/benchmarks", summary="The registered benchmarks")
async def list_benchmarks(backend: BackendDep, tenant: TenantDep) -> dict[str, Any]:
    return {"benchmarks": await backend.files.benchmarks(tenant)}


@router.get(
    "/benchmarks/{name}",
    summary="A registered benchmark's file, as it was put",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def get_benchmark(
    name: BenchmarkName, backend: BackendDep, tenant: TenantDep
) -> StreamingResponse:
    """The bytes PUT under ``name`` (another tenant's benchmark does not exist: 404)."""
    meta, chunks = await backend.files.benchmark(name, tenant)
    return StreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Length": str(meta["bytes"]),
            "X-Content-SHA256": meta["sha256"],
        },
    )


@router.delete("/benchmarks/{name}", status_code=204, summary="Remove a benchmark")
async def delete_benchmark(name: BenchmarkName, backend: BackendDep, tenant: TenantDep) -> Response:
    await backend.files.delete_benchmark(name, tenant)
    return Response(status_code=204)


@router.post(
    "/selections",
    status_code=201,
    response_model=JobView,
    summary="Select from an imported dataset (dedup, decontamination, TACOS, exports)",
    responses=REPLAYED_RESPONSE,
)
async def create_selection(spec: SelectJobSpec, submission: SubmissionDep) -> JobView:
    """Imports the source, drops malformed rows (reported with their row numbers), duplicates
    and benchmark overlaps, tags and clusters the rest, scores each sample against its
    cluster's reference through the judge, selects for the budget and writes the exports and
    the dataset card. Watch it like any job (GET /v1/jobs/{id}, .../events)."""
    recipe, source = spec.to_proto(submission.models)
    backend, tenant = submission.backend, submission.tenant
    progress, created = await backend.create_select_job(recipe, source, submission.key, tenant)
    return submitted_view(progress, created, submission.response)
