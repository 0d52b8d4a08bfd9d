"""Response bodies: jobs as clients see them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import Response
from pydantic import BaseModel

from taxoforge.jobs.model import JobKind, job_kind
from taxoforge.protojson import to_dict
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "ERROR_RESPONSES",
    "REPLAYED_RESPONSE",
    "ErrorView",
    "JobView",
    "job_view",
    "submitted_view",
]


class StageView(BaseModel):
    stage: str
    done: int
    failed: int
    # Results a selection step waits for (0 when not known yet).
    planned: int = 0


class UsageView(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    # Requests sent to a model: every one paid for, a repeat after a crash included.
    calls: int = 0
    # Replies served from the shared request cache instead (nothing sent, nothing spent).
    cached_calls: int = 0


class FailureReasonView(BaseModel):
    stage: str
    reason: str
    items: int


class JudgeHealthView(BaseModel):
    """The judge on this job: position bias, score spread, parse failures, agreement."""

    calls: int
    invalid_replies: int
    parse_failure_rate: float
    judge_failures: int
    comparisons: int
    inconsistent: int
    swap_disagreement_rate: float
    histogram: dict[int, int]
    golden_pairs: int
    golden_accuracy: float | None
    golden_kappa: float | None
    contrastive_kept: int
    contrastive_refined: int
    contrastive_exhausted: int


def _health(h: pb.JudgeHealth) -> JudgeHealthView:
    return JudgeHealthView(
        calls=h.calls,
        invalid_replies=h.invalid_replies,
        parse_failure_rate=round(h.parse_failure_rate, 4),
        judge_failures=h.judge_failures,
        comparisons=h.comparisons,
        inconsistent=h.inconsistent,
        swap_disagreement_rate=round(h.swap_disagreement_rate, 4),
        histogram=dict(sorted(h.histogram.items())),
        golden_pairs=h.golden_pairs,
        golden_accuracy=round(h.golden_accuracy, 4) if h.golden_pairs else None,
        golden_kappa=round(h.golden_kappa, 4) if h.golden_pairs else None,
        contrastive_kept=h.contrastive_kept,
        contrastive_refined=h.contrastive_refined,
        contrastive_exhausted=h.contrastive_exhausted,
    )


class SelectionView(BaseModel):
    """What selection kept, and what it left out and why."""

    judged: int
    failed: int
    sft_records: int
    preference_records: int
    ties: int
    over_budget: int
    failures_by_stage: dict[str, int]
    failure_reasons: list[FailureReasonView]
    usage: UsageView
    by_language: dict[str, int]
    by_strategy: dict[str, int]
    # Drafts the quality gates turned down, by reason (response_* for answers).
    rejections: dict[str, int]
    # Judged items left out of the datasets (contrastive filtering, dropped pairs).
    unusable: int
    judge: JudgeHealthView
    # Selection: the method, the candidates after dedup and decontamination, what was kept.
    method: str
    candidates: int
    selected: int
    selected_tokens: int
    duplicates: int
    near_duplicates: int
    contaminated: dict[str, int]
    # Selection jobs: the import (rows, malformed rows with their row numbers, shapes).
    imported: dict[str, Any] | None
    # Tags, comparisons and their judge calls; clusters with their quota and what was kept;
    # every method measured on the same candidates.
    tacos: dict[str, Any]
    clusters: list[dict[str, Any]]
    methods: list[dict[str, Any]]


class CellView(BaseModel):
    """One plan cell: its target, what the datasets hold, and why any of it is missing."""

    node: str
    language: str
    # Empty when the recipe does not control the dimension.
    difficulty: str
    task_type: str
    planned: int
    sft: int
    # Preference pairs (0 when the job's exports promise none).
    preference: int
    # Items generated for the cell, replacement seeds included.
    candidates: int
    short: bool
    # Why items of the cell were not delivered ("gate:echo", "failed:instruct", "no_pair",
    # "selection:duplicate_or_contaminated").
    reasons: dict[str, int]


class CompositionView(BaseModel):
    """A generation job's plan against its delivery, cell by cell."""

    short: bool
    planned: int
    sft: int
    preference: int
    preference_promised: bool
    # Items the job could generate and did, and the top-up rounds that replaced failures.
    max_candidates: int
    candidates: int
    rounds: int
    # Why generation stopped with cells short, when it did.
    stopped: str | None
    cells: list[CellView]
    # The short cells alone (every cell is in ``cells``).
    short_cells: list[CellView]


class DatasetView(BaseModel):
    kind: str
    format: str
    # The file's place in the job's dataset folder ("data/sft.parquet", "README.md").
    path: str
    records: int
    bytes: int
    sha256: str
    url: str


JobState = Literal[
    "pending", "running", "selecting", "applying", "succeeded", "failed", "cancelled"
]


class JobView(BaseModel):
    """A job as clients see it: state, per-stage progress, usage, datasets."""

    id: str
    name: str
    kind: Literal["generate", "expand", "induce", "select"]
    state: JobState
    # Selection's current step: prepare, tag, cluster, compare or select.
    step: str | None
    taxonomy: str
    taxonomy_version: str
    planned: int
    finished: int
    stages: list[StageView]
    usage: UsageView
    datasets: list[DatasetView]
    selection: SelectionView | None
    # Expansion and induction jobs: the taxonomy version they made, and what induction merged.
    result_taxonomy_version: str | None
    induction: dict[str, Any] | None
    error: str | None
    created_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    recipe: dict[str, Any]
    # Selection jobs: the file they import.
    source: dict[str, Any] | None
    # Where the job stops spending (the tenant's job limit); None: no limit.
    spend_limit: dict[str, Any] | None = None
    # Generation: the datasets hold less than the plan in some cell (see composition).
    short: bool = False
    # Generation: why it stopped generating early (its spend limit), when it did.
    stopped: str | None = None
    # Generation: plan against delivery per cell (None until the job's review has run).
    composition: CompositionView | None = None


class ErrorDetailView(BaseModel):
    field: str
    message: str


class ErrorBodyView(BaseModel):
    code: str
    message: str
    # 422: each invalid field and what to fix.
    details: list[ErrorDetailView] | None = None


class ErrorView(BaseModel):
    """The body of the gateway's errors."""

    error: ErrorBodyView


# The errors app.py maps on every route (NotFoundError, ConflictError, PermanentError and
# invalid requests, TransientError), documented so clients (and the schema fuzz) can rely on them.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorView, "description": "The body could not be parsed (e.g. not UTF-8)"},
    401: {"model": ErrorView, "description": "No valid API key (Authorization: Bearer <key>)"},
    404: {"model": ErrorView, "description": "Not found"},
    409: {"model": ErrorView, "description": "Conflicts with the current state"},
    422: {"model": ErrorView, "description": "Invalid request; details name each field"},
    413: {"model": ErrorView, "description": "The body is larger than the gateway accepts"},
    429: {"model": ErrorView, "description": "Over the tenant's rate limit; see Retry-After"},
    503: {"model": ErrorView, "description": "A service behind the gateway is unavailable"},
}


# A submission retried with its Idempotency-Key answers 200 with the job it created.
REPLAYED_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"model": JobView, "description": "The job this Idempotency-Key already created"}
}


def submitted_view(progress: pb.JobProgress, created: bool, response: Response) -> JobView:
    """A submitted job's view, with its Location; 200 when the Idempotency-Key replayed it."""
    response.headers["Location"] = f"/v1/jobs/{progress.job.id}"
    if not created:
        response.status_code = 200
    return job_view(progress)


def _time(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def _usage(u: pb.Usage) -> UsageView:
    return UsageView(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cost_usd=round(u.cost_usd, 6),
        calls=u.calls,
        cached_calls=u.cached_calls,
    )


_STATES: dict[int, JobState] = {
    pb.JOB_STATE_PENDING: "pending",
    pb.JOB_STATE_RUNNING: "running",
    pb.JOB_STATE_SELECTING: "selecting",
    pb.JOB_STATE_SUCCEEDED: "succeeded",
    pb.JOB_STATE_FAILED: "failed",
    pb.JOB_STATE_CANCELLED: "cancelled",
}


def _composition(c: pb.Composition) -> CompositionView:
    cells = [
        CellView(
            node=cell.node_id,
            language=cell.language,
            difficulty=cell.difficulty,
            task_type=cell.task_type,
            planned=cell.planned,
            sft=cell.sft,
            preference=cell.preference,
            candidates=cell.candidates,
            short=cell.sft < cell.planned
            or (c.preference_promised and cell.preference < cell.planned),
            reasons=dict(cell.reasons),
        )
        for cell in c.cells
    ]
    return CompositionView(
        short=c.short,
        planned=c.planned,
        sft=c.sft,
        preference=c.preference,
        preference_promised=c.preference_promised,
        max_candidates=c.max_candidates,
        candidates=c.candidates,
        rounds=c.rounds,
        stopped=c.stopped or None,
        cells=cells,
        short_cells=[cell for cell in cells if cell.short],
    )


def job_view(progress: pb.JobProgress) -> JobView:
    """Map the contract's JobProgress to the REST shape."""
    job = progress.job
    selection = None
    if job.HasField("selection"):
        s = job.selection
        selection = SelectionView(
            judged=s.judged,
            failed=s.failed,
            sft_records=s.sft_records,
            preference_records=s.preference_records,
            ties=s.ties,
            over_budget=s.over_budget,
            failures_by_stage=dict(s.failures_by_stage),
            failure_reasons=[
                FailureReasonView(stage=r.stage, reason=r.reason, items=r.items)
                for r in s.failure_reasons
            ],
            usage=_usage(s.usage),
            by_language=dict(s.by_language),
            by_strategy=dict(s.by_strategy),
            rejections=dict(s.rejections),
            unusable=s.unusable,
            judge=_health(s.judge),
            method=s.method,
            candidates=s.candidates,
            selected=s.selected,
            selected_tokens=s.selected_tokens,
            duplicates=s.duplicates,
            near_duplicates=s.near_duplicates,
            contaminated=dict(s.contaminated),
            imported=to_dict(s.imported, defaults=True) if s.HasField("imported") else None,
            tacos=to_dict(s.tacos, defaults=True),
            clusters=[to_dict(c, defaults=True) for c in s.clusters],
            methods=[to_dict(m, defaults=True) for m in s.methods],
        )
    kind = job_kind(job)
    state = _STATES.get(job.state, "pending")
    if state == "selecting" and kind not in (JobKind.GENERATE, JobKind.SELECT):
        state = "applying"
    return JobView(
        id=job.id,
        name=job.recipe.name,
        kind=kind.value,
        state=state,
        step=job.phase or None,
        taxonomy=job.recipe.taxonomy_id or job.expand.taxonomy_id or job.induce.taxonomy_id,
        taxonomy_version=job.taxonomy_version,
        planned=job.planned,
        finished=progress.finished,
        stages=[
            StageView(stage=s.stage, done=s.done, failed=s.failed, planned=s.planned)
            for s in progress.stages
        ],
        usage=_usage(progress.usage),
        datasets=[_dataset(job.id, d) for d in job.datasets],
        selection=selection,
        result_taxonomy_version=job.result_taxonomy_version or None,
        induction=to_dict(job.induction) if job.HasField("induction") else None,
        error=job.error or None,
        created_at=_time(job.created_at_ms),
        updated_at=_time(job.updated_at_ms),
        finished_at=_time(job.finished_at_ms),
        recipe=_recipe(job) if kind in (JobKind.GENERATE, JobKind.SELECT) else _spec(job),
        source=_source(job) if job.HasField("source") else None,
        spend_limit=to_dict(job.spend_limit) or None,
        short=job.short,
        stopped=job.stopped or None,
        composition=_composition(job.selection.composition)
        if job.selection.HasField("composition")
        else None,
    )


def _recipe(job: pb.Job) -> dict[str, Any]:
    """The recipe in the tenant's own names (benchmarks are stored under tenant~name)."""
    recipe = to_dict(job.recipe)
    names = recipe.get("selection", {}).get("decontaminate")
    if names and job.tenant:
        recipe["selection"]["decontaminate"] = [n.removeprefix(f"{job.tenant}~") for n in names]
    return recipe


def _source(job: pb.Job) -> dict[str, Any]:
    source = to_dict(job.source)
    if job.tenant and "object" in source:
        source["object"] = source["object"].removeprefix(f"tenants/{job.tenant}/")
    return source


def _dataset(job_id: str, d: pb.DatasetInfo) -> DatasetView:
    path = d.object_name.removeprefix(f"{job_id}/")
    return DatasetView(
        kind=d.kind,
        format=d.format,
        path=path,
        records=d.records,
        bytes=d.bytes,
        sha256=d.sha256,
        url=f"/v1/jobs/{job_id}/files/{path}",
    )


def _spec(job: pb.Job) -> dict[str, Any]:
    if job.HasField("expand"):
        return to_dict(job.expand)
    return to_dict(job.induce)
