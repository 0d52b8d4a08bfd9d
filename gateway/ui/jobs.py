"""The console's job pages: the tenant's jobs with live progress, and one job's page (stage
funnel, composition, judge health, selection methods, untagged candidates, files, cancel)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from gateway.deps import BackendDep
from gateway.files import FILE_HEADERS, media_type
from gateway.routes.jobs import event_stream, tenant_jobs
from gateway.ui.render import render
from gateway.ui.session import UiTenant
from gateway.views import FailureReasonView, JobView, SelectionView, job_view
from taxoforge.errors import NotFoundError

__all__ = ["router"]

router = APIRouter()

# Jobs the list shows; and how many of them stream live progress at once (a browser keeps
# about six connections to a host, and the page's links need some).
LIST_LIMIT = 200
LIVE_LIMIT = 4
_LIVE_STATES = {"pending", "running", "selecting", "applying"}
# The card's charts: SVG, or PNG in cards written before.
_IMAGES = ("svg", "png")


_JOB_ID = re.compile(r"j-[0-9a-f]{6,40}")


def known_job_id(job_id: str) -> str:
    """``job_id`` when it has a job id's shape; any other name is no job (404, as an unknown
    id is), before it reaches a store lookup."""
    if not _JOB_ID.fullmatch(job_id):
        raise NotFoundError(f"job {job_id!r} does not exist")
    return job_id


def _tokens(view: JobView) -> int:
    return view.usage.prompt_tokens + view.usage.completion_tokens


@router.get("/jobs")
async def jobs_page(request: Request, tenant: UiTenant, backend: BackendDep) -> Response:
    """The tenant's jobs, newest first; running ones update live."""
    views = [job_view(p) for p in await tenant_jobs(backend, tenant, LIST_LIMIT)]
    live = {v.id for v in views if v.state in _LIVE_STATES}
    live = set(sorted(live, key=[v.id for v in views].index)[:LIVE_LIMIT])
    return render(request, "jobs.html", jobs=views, live=live, tokens=_tokens)


@router.get("/jobs/{job_id}/events")
async def job_events(
    job_id: str,
    tenant: UiTenant,
    backend: BackendDep,
    interval_s: Annotated[float, Query(ge=0.2, le=60)] = 1.0,
) -> StreamingResponse:
    """GET /v1/jobs/{id}/events for the console's session (its cookie, not a bearer key)."""
    return await event_stream(backend, known_job_id(job_id), tenant, interval_s)


def _funnel(view: JobView) -> list[dict[str, Any]]:
    """Each stage with what it was planned to do (the plan's items, or the step's own count),
    what it did and what failed."""
    rows = []
    for stage in view.stages:
        planned = stage.planned or (view.planned if stage.stage != "plan" else 1)
        rows.append(
            {
                "stage": stage.stage,
                "planned": planned,
                "done": stage.done,
                "failed": stage.failed,
                "waiting": max(0, planned - stage.done - stage.failed),
            }
        )
    return rows


def _histogram(histogram: dict[int, int]) -> list[tuple[int, int]]:
    """Scores 1-10 each with its count (0 where none), so the chart has no gaps."""
    if not histogram:
        return []
    low, high = min(1, *histogram), max(10, *histogram)
    return [(score, histogram.get(score, 0)) for score in range(low, high + 1)]


def _untagged(selection: SelectionView | None) -> dict[str, Any] | None:
    """The candidates the tagger left without tags (report.tacos): how many of how many, and
    the reasons the report names, the rest summed as "other reasons" so the counts add up.
    None when every candidate was tagged (or clustering was not by tags)."""
    tacos = selection.tacos if selection else {}
    failures = int(tacos.get("tag_failures") or 0)
    if failures <= 0:
        return None
    reasons = [FailureReasonView.model_validate(r) for r in tacos.get("tag_failure_reasons") or []]
    return {
        "failures": failures,
        "of": failures + int(tacos.get("tagged") or 0),
        "reasons": reasons,
        "other": max(0, failures - sum(r.items for r in reasons)),
    }


@router.get("/jobs/{job_id}")
async def job_page(
    request: Request, job_id: str, tenant: UiTenant, backend: BackendDep
) -> Response:
    """One job: progress, stage funnel, composition, judge health, selection, files."""
    view = job_view(await backend.progress(known_job_id(job_id), tenant))
    selection = view.selection
    histogram = _histogram(selection.judge.histogram) if selection else []
    methods = selection.methods if selection else []
    method_columns = sorted({k for m in methods for k, v in m.items() if not isinstance(v, dict)})
    if "method" in method_columns:
        method_columns.remove("method")
        method_columns.insert(0, "method")
    return render(
        request,
        "job.html",
        job=view,
        live=view.state in _LIVE_STATES,
        funnel=_funnel(view),
        histogram=histogram,
        histogram_max=max((n for _, n in histogram), default=0),
        methods=methods,
        method_columns=method_columns,
        untagged=_untagged(selection),
        tokens=_tokens(view),
        has_records=any(d.kind in ("provenance", "dropped") for d in view.datasets),
        card=next((d for d in view.datasets if d.path == "README.md"), None),
    )


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, tenant: UiTenant, backend: BackendDep) -> RedirectResponse:
    """Cancel, as POST /v1/jobs/{id}:cancel does; back to the job's page."""
    await backend.cancel(known_job_id(job_id), tenant)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


@router.get("/jobs/{job_id}/files/{path:path}")
async def job_file(
    job_id: str, path: str, tenant: UiTenant, backend: BackendDep
) -> StreamingResponse:
    """A finished job's file for the session, as GET /v1/jobs/{id}/files/{path} serves it."""
    info, chunks = await backend.files.file(known_job_id(job_id), path, tenant)
    name = path.rsplit("/", 1)[-1]
    inline = info.format in (*_IMAGES, "md")
    return StreamingResponse(
        chunks,
        media_type=media_type(info.format),
        headers={
            "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
            "Cache-Control": "private, no-store",
            **FILE_HEADERS,
        },
    )


@router.get("/jobs/{job_id}/card")
async def card_page(
    request: Request, job_id: str, tenant: UiTenant, backend: BackendDep
) -> Response:
    """The dataset card (README.md) as text, with its charts."""
    view = job_view(await backend.progress(known_job_id(job_id), tenant))
    card = next((d for d in view.datasets if d.path == "README.md"), None)
    if card is None:
        raise NotFoundError(f"job {job_id} has no dataset card (yet)")
    _, chunks = await backend.files.file(job_id, card.path, tenant)
    text = b"".join([chunk async for chunk in chunks]).decode("utf-8", "replace")
    images = [d.path for d in view.datasets if d.format in _IMAGES]
    return render(request, "card.html", job=view, text=text, images=images)
