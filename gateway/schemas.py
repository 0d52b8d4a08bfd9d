"""Request and response bodies of the REST API, and their mapping to the protobuf contract."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taxoforge.languages import LANGUAGES
from taxoforge.protojson import to_dict
from taxoforge.settings import LLMSettings
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "JobView",
    "ModelSpec",
    "RecipeSpec",
    "job_view",
    "recipe_to_proto",
]

_STRICT = ConfigDict(extra="forbid")


class ModelSpec(BaseModel):
    """A model for a role. Fields left out come from the server's defaults (TAXOFORGE_LLM_*)."""

    model_config = _STRICT

    model: str | None = Field(default=None, min_length=1, examples=["openai/gpt-4o-mini"])
    api_base: str | None = Field(default=None, examples=["http://vllm:8000/v1"])
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_concurrency: int | None = Field(default=None, ge=1, le=4096)
    input_cost_per_million: float | None = Field(default=None, ge=0)
    output_cost_per_million: float | None = Field(default=None, ge=0)
    response_format: Literal["auto", "json_schema", "json_object", "none"] | None = None


class RoleModelsSpec(BaseModel):
    """Models per role (design §3)."""

    model_config = _STRICT

    generator: ModelSpec | None = None
    responders: list[ModelSpec] | None = Field(default=None, min_length=1, max_length=16)
    judge: ModelSpec | None = None


class LanguageSpec(BaseModel):
    """A language and its share of the job."""

    model_config = _STRICT

    code: str
    share: float | None = Field(default=None, gt=0, le=1)

    @field_validator("code")
    @classmethod
    def _known(cls, code: str) -> str:
        code = code.strip().lower()
        if code not in LANGUAGES:
            raise ValueError(
                f"unknown language {code!r}; use an ISO 639-1 code, "
                f"one of: {', '.join(sorted(LANGUAGES))}"
            )
        return code


class RecipeSpec(BaseModel):
    """What to generate. Only ``count`` is required; everything else has a default."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "quickstart",
                    "taxonomy": "starter",
                    "count": 8,
                    "languages": [{"code": "en", "share": 0.5}, {"code": "fr", "share": 0.5}],
                    "responses_per_instruction": 2,
                }
            ]
        },
    )

    name: str = Field(default="job", min_length=1, max_length=120)
    taxonomy: str = Field(default="starter", min_length=1, max_length=64)
    count: int = Field(ge=1, le=1_000_000, description="Instructions to generate.")
    languages: list[LanguageSpec] = Field(
        default_factory=lambda: [LanguageSpec(code="en")],
        min_length=1,
        description="Codes (equal shares) or {code, share} with shares summing to 1.",
    )
    responses_per_instruction: int = Field(default=2, ge=2, le=16)
    budget: int = Field(default=0, ge=0, description="Records kept per dataset; 0 keeps all.")
    seed: int = Field(default=0, ge=0, lt=2**63)
    min_margin: float = Field(default=1.0, ge=0, le=9, description="Chosen minus rejected score.")
    models: RoleModelsSpec = Field(default_factory=RoleModelsSpec)

    @field_validator("languages", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"code": x} if isinstance(x, str) else x for x in value]
        return value

    @model_validator(mode="after")
    def _shares(self) -> RecipeSpec:
        langs = self.languages
        codes = [lang.code for lang in langs]
        if len(set(codes)) != len(codes):
            raise ValueError(f"languages lists a code twice: {codes}")
        given = [lang.share for lang in langs if lang.share is not None]
        if given and len(given) != len(langs):
            raise ValueError("give a share for every language, or for none (equal split)")
        if not given:
            for lang in langs:
                lang.share = 1.0 / len(langs)
        else:
            total = math.fsum(given)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"language shares sum to {total:g}; they must sum to 1")
        self.languages = list(langs)
        return self


_ROLE_DEFAULTS: dict[str, dict[str, float | int]] = {
    "generator": {"temperature": 0.8, "max_tokens": 256},
    "responder": {"temperature": 0.7, "max_tokens": 512},
    "judge": {"temperature": 0.0, "max_tokens": 256},
}
# Two sampling settings of one model give the judge contrast to build pairs from.
_DEFAULT_RESPONDERS = [ModelSpec(temperature=0.3), ModelSpec(temperature=1.0)]


def _model(spec: ModelSpec | None, role: str, defaults: LLMSettings) -> pb.ModelConfig:
    spec = spec or ModelSpec()
    role_defaults = _ROLE_DEFAULTS[role]
    if spec.api_base is not None:
        api_base = spec.api_base
    elif spec.model:
        api_base = ""  # a model named without a base is reached at its provider's own endpoint
    else:
        api_base = defaults.api_base or ""
    cfg = pb.ModelConfig(
        model=spec.model or defaults.model,
        api_base=api_base,
        temperature=spec.temperature
        if spec.temperature is not None
        else role_defaults["temperature"],
        max_tokens=spec.max_tokens or int(role_defaults["max_tokens"]),
        max_concurrency=spec.max_concurrency or 0,
        response_format=spec.response_format or defaults.response_format,
    )
    if spec.top_p is not None:
        cfg.top_p = spec.top_p
    if spec.input_cost_per_million is not None:
        cfg.input_cost_per_million = spec.input_cost_per_million
    if spec.output_cost_per_million is not None:
        cfg.output_cost_per_million = spec.output_cost_per_million
    return cfg


def recipe_to_proto(spec: RecipeSpec, defaults: LLMSettings) -> pb.Recipe:
    """The immutable recipe a job records: every role resolved to a concrete model."""
    responders = spec.models.responders or _DEFAULT_RESPONDERS
    models = pb.RoleModels(
        generator=_model(spec.models.generator, "generator", defaults),
        responders=[_model(r, "responder", defaults) for r in responders],
        judge=_model(spec.models.judge, "judge", defaults),
    )
    return pb.Recipe(
        name=spec.name,
        taxonomy_id=spec.taxonomy,
        count=spec.count,
        languages=[
            pb.LanguageShare(code=lang.code, share=lang.share or 0.0) for lang in spec.languages
        ],
        models=models,
        responses_per_instruction=spec.responses_per_instruction,
        budget=spec.budget,
        seed=spec.seed,
        min_margin=spec.min_margin,
    )


class StageView(BaseModel):
    stage: str
    done: int
    failed: int


class UsageView(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0


class FailureReasonView(BaseModel):
    stage: str
    reason: str
    items: int


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


class DatasetView(BaseModel):
    kind: str
    records: int
    bytes: int
    sha256: str
    url: str


JobState = Literal["pending", "running", "selecting", "succeeded", "failed", "cancelled"]


class JobView(BaseModel):
    """A job as clients see it: state, per-stage progress, usage, datasets."""

    id: str
    name: str
    state: JobState
    taxonomy: str
    taxonomy_version: str
    planned: int
    finished: int
    stages: list[StageView]
    usage: UsageView
    datasets: list[DatasetView]
    selection: SelectionView | None
    error: str | None
    created_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None
    recipe: dict[str, Any]


def _time(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms else None


def _usage(u: pb.Usage) -> UsageView:
    return UsageView(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cost_usd=round(u.cost_usd, 6),
        calls=u.calls,
    )


_STATES: dict[int, JobState] = {
    pb.JOB_STATE_PENDING: "pending",
    pb.JOB_STATE_RUNNING: "running",
    pb.JOB_STATE_SELECTING: "selecting",
    pb.JOB_STATE_SUCCEEDED: "succeeded",
    pb.JOB_STATE_FAILED: "failed",
    pb.JOB_STATE_CANCELLED: "cancelled",
}


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
        )
    return JobView(
        id=job.id,
        name=job.recipe.name,
        state=_STATES.get(job.state, "pending"),
        taxonomy=job.recipe.taxonomy_id,
        taxonomy_version=job.taxonomy_version,
        planned=job.planned,
        finished=progress.finished,
        stages=[StageView(stage=s.stage, done=s.done, failed=s.failed) for s in progress.stages],
        usage=_usage(progress.usage),
        datasets=[
            DatasetView(
                kind=d.kind,
                records=d.records,
                bytes=d.bytes,
                sha256=d.sha256,
                url=f"/v1/jobs/{job.id}/datasets/{d.kind}",
            )
            for d in job.datasets
        ],
        selection=selection,
        error=job.error or None,
        created_at=_time(job.created_at_ms),
        updated_at=_time(job.updated_at_ms),
        finished_at=_time(job.finished_at_ms),
        recipe=to_dict(job.recipe),
    )
