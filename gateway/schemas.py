"""Request and response bodies of the REST API, and their mapping to the protobuf contract."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from gateway.selection_spec import SelectionSpecModel
from taxoforge.languages import LANGUAGES
from taxoforge.llm.endpoints import ModelRegistry
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "OPERATOR_SETTING",
    "JudgingSpec",
    "ModelSpec",
    "RecipeSpec",
    "embedder_config",
    "model_config",
    "recipe_to_proto",
    "refuse_operator_fields",
]

_STRICT = ConfigDict(extra="forbid")

# The error type of a request that sets what only the operator sets; the gateway's 422 adds
# the model names the caller may use.
OPERATOR_SETTING = "operator_setting"
_OPERATOR_FIELDS = (
    "api_base",
    "api_key",
    "base_url",
    "embedder_api_base",
    "max_concurrency",
    "input_cost_per_million",
    "output_cost_per_million",
    "response_format",
)


def refuse_operator_fields(data: Any) -> Any:
    """Refuse, with a message saying why, the fields that choose an endpoint, a key, a price
    or a limit: those are the operator's (TAXOFORGE_LLM_MODELS_FILE), never a request's."""
    if isinstance(data, dict):
        given = [f for f in _OPERATOR_FIELDS if f in data]
        if given:
            raise PydanticCustomError(
                OPERATOR_SETTING,
                "{fields}: model endpoints, keys, prices and limits are the operator's; name "
                "one of the operator's models in `model` and set only temperature, max_tokens "
                "or top_p",
                {"fields": ", ".join(given)},
            )
    return data


class ModelSpec(BaseModel):
    """A role's model: one the operator declared (GET /v1/models lists them), and sampling."""

    model_config = _STRICT

    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        examples=["default"],
        description="A name from GET /v1/models; left out: the operator's default for the role.",
    )
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    top_p: float | None = Field(default=None, gt=0, le=1)

    _no_endpoint = model_validator(mode="before")(refuse_operator_fields)


class RoleModelsSpec(BaseModel):
    """Models per role (design §3)."""

    model_config = _STRICT

    generator: ModelSpec | None = None
    responders: list[ModelSpec] | None = Field(default=None, min_length=1, max_length=16)
    judge: ModelSpec | None = None
    target: ModelSpec | None = Field(
        default=None, description="CodecLM's target model (contrastive filtering)."
    )
    tagger: ModelSpec | None = Field(
        default=None, description="Open tags for selection clustered by tags (TACOS)."
    )
    embedder: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Tag merging and DEITA: local/all-minilm-l6-v2 (offline, the default) or "
        "an embedding model from GET /v1/models.",
    )

    _no_endpoint = model_validator(mode="before")(refuse_operator_fields)


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


class ShareSpec(BaseModel):
    """A value of a plan dimension (a difficulty, a task type) and its share."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=64)
    share: float | None = Field(default=None, gt=0, le=1)


class GoldenSpec(BaseModel):
    """A labelled pair the judge is checked against."""

    model_config = _STRICT

    instruction: str = Field(min_length=1)
    a: str = Field(min_length=1)
    b: str = Field(min_length=1)
    preferred: Literal["a", "b", "tie"]


class JudgingSpec(BaseModel):
    """How candidates are judged."""

    model_config = _STRICT

    mode: Literal["rubric", "pairwise"] = Field(
        default="rubric",
        description="rubric: 1-10 overall and per aspect; pairwise: 1-100, both orders.",
    )
    swap: bool = Field(
        default=True, description="Pairwise: judge both orders (off only to measure bias)."
    )
    disagreement: float = Field(
        default=30.0,
        gt=0,
        le=100,
        description="Pairwise: the orders' verdicts may differ this much.",
    )
    inconsistent: Literal["tie", "drop", "third"] = Field(
        default="tie", description="What an inconsistent pair becomes."
    )
    contrastive_gap: float = Field(
        default=3.0, gt=0, le=9, description="CodecLM: keep an instruction above this gap."
    )
    golden: list[GoldenSpec] = Field(default_factory=list, max_length=500)

    def to_proto(self) -> pb.JudgeConfig:
        return pb.JudgeConfig(
            mode=self.mode,
            no_swap=not self.swap,
            disagreement=self.disagreement,
            inconsistent=self.inconsistent,
            contrastive_gap=self.contrastive_gap,
            golden=[
                pb.GoldenPair(instruction=g.instruction, a=g.a, b=g.b, preferred=g.preferred)
                for g in self.golden
            ],
        )


def _as_items(value: Any, key: str) -> Any:
    """Let a list of plain names stand for items with equal shares."""
    if isinstance(value, list):
        return [{key: x} if isinstance(x, str) else x for x in value]
    return value


def _split(kind: str, names: list[str], shares: list[float | None]) -> list[float]:
    """Shares as given (they must sum to 1), or equal when none is given."""
    if len(set(names)) != len(names):
        raise ValueError(f"{kind} lists a value twice: {names}")
    given = [s for s in shares if s is not None]
    if not given:
        return [1.0 / len(names)] * len(names) if names else []
    if len(given) != len(shares):
        raise ValueError(f"give a share for every {kind} value, or for none (equal split)")
    total = math.fsum(given)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{kind} shares sum to {total:g}; they must sum to 1")
    return given


def _fill_shares(kind: str, values: Sequence[LanguageSpec | ShareSpec], names: list[str]) -> None:
    """Every value's share: as given, or an equal split when none is given."""
    for value, share in zip(values, _split(kind, names, [v.share for v in values]), strict=True):
        value.share = share


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
                    "difficulties": ["easy", "medium", "hard"],
                    "task_types": ["open-qa", "reasoning"],
                    "responses_per_instruction": 2,
                }
            ]
        },
    )

    name: str = Field(default="job", min_length=1, max_length=120)
    taxonomy: str = Field(
        default="starter",
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}(@[0-9]+)?$",
        description="A taxonomy id, or id@version to pin one; the job records the version used.",
    )
    count: int = Field(ge=1, le=1_000_000, description="Instructions to generate.")
    languages: list[LanguageSpec] = Field(
        default_factory=lambda: [LanguageSpec(code="en")],
        min_length=1,
        description="Codes (equal shares) or {code, share} with shares summing to 1.",
    )
    nodes: list[str] = Field(
        default_factory=list, description="Plan only under these nodes; empty: everywhere."
    )
    distribution: Literal["weight", "uniform"] = Field(
        default="weight", description="Seeds per leaf by node weight, or the same for each leaf."
    )
    node_counts: dict[str, int] | None = Field(
        default=None, description="Exact seeds per node (inner nodes spread over their leaves)."
    )
    difficulties: list[ShareSpec] = Field(
        default_factory=list, description="easy, medium, hard, expert; names or {name, share}."
    )
    task_taxonomy: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}(@[0-9]+)?$",
        description='Task taxonomy (built in: "tasks"); set by task_types when left out.',
    )
    task_types: list[ShareSpec] | Literal["all"] | None = Field(
        default=None, description='Task types (names or {name, share}), or "all" by weight.'
    )
    strategies: list[ShareSpec] = Field(
        default_factory=list,
        description="Instruction strategies glan, tap, codeclm: names or {name, share}; "
        "default tap.",
    )
    rubric_rounds: int = Field(default=1, ge=0, le=4, description="CodecLM Self-Rubrics rounds.")
    cache: bool = Field(default=True, description="Reuse identical model calls from the cache.")
    language_check: bool = Field(
        default=True, description="Turn down drafts not in the asked language."
    )
    instruction_attempts: int = Field(default=4, ge=1, le=10)
    near_duplicate: float = Field(
        default=0.8, ge=0, le=1, description="Shingle Jaccard from which drafts are duplicates."
    )
    contrastive: bool = Field(
        default=False, description="CodecLM contrastive filtering (needs models.target)."
    )
    responses_per_instruction: int = Field(default=2, ge=2, le=16)
    budget: int = Field(
        default=0, ge=0, lt=2**63, description="Records kept per dataset; 0 keeps all."
    )
    seed: int = Field(default=0, ge=0, lt=2**63)
    max_candidates: float = Field(
        default=2.0,
        ge=1.0,
        le=20.0,
        description="Items the job may generate to fill every plan cell, as a factor of count: "
        "cells whose items fail or give no record get replacement seeds until full or this "
        "is spent (1: no replacements).",
    )
    min_margin: float | None = Field(
        default=None,
        ge=0,
        le=99,
        description="Chosen minus rejected score; default 1 (rubric, 1-10) "
        "or 10 (pairwise, 1-100).",
    )
    judging: JudgingSpec = Field(default_factory=JudgingSpec)
    selection: SelectionSpecModel | None = Field(
        default=None,
        description="How the datasets are chosen; default TACOS over taxonomy nodes by judge "
        "score, with the recipe's budget.",
    )
    models: RoleModelsSpec = Field(default_factory=RoleModelsSpec)

    @field_validator("languages", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        return _as_items(value, "code")

    @field_validator("difficulties", "task_types", "strategies", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return _as_items(value, "name")

    @model_validator(mode="after")
    def _shares(self) -> RecipeSpec:
        _fill_shares("language", self.languages, [x.code for x in self.languages])
        _fill_shares("difficulty", self.difficulties, [x.name for x in self.difficulties])
        if isinstance(self.task_types, list):
            _fill_shares("task type", self.task_types, [x.name for x in self.task_types])
        _fill_shares("strategy", self.strategies, [x.name for x in self.strategies])
        if self.contrastive and self.models.target is None:
            raise ValueError(
                "contrastive filtering needs models.target (the model the data is for; "
                "{} uses the server default)"
            )
        if self.task_types is not None and self.task_taxonomy is None:
            self.task_taxonomy = "tasks"
        if self.node_counts is not None:
            if any(n < 0 for n in self.node_counts.values()):
                raise ValueError("node_counts must not be negative")
            if sum(self.node_counts.values()) != self.count:
                raise ValueError(
                    f"node_counts sum to {sum(self.node_counts.values())} but count is "
                    f"{self.count}; make them equal"
                )
        return self


_ROLE_DEFAULTS: dict[str, dict[str, float | int]] = {
    "generator": {"temperature": 0.8, "max_tokens": 256},
    "responder": {"temperature": 0.7, "max_tokens": 512},
    "judge": {"temperature": 0.0, "max_tokens": 256},
    # GLAN samples subject lists at temperature 1.0; lists and syllabi are long.
    "expander": {"temperature": 1.0, "max_tokens": 2048},
    "tagger": {"temperature": 0.0, "max_tokens": 256},
}
# Two sampling settings of one model give the judge contrast to build pairs from.
_DEFAULT_RESPONDERS = [ModelSpec(temperature=0.3), ModelSpec(temperature=1.0)]


def model_config(
    spec: ModelSpec | None, role: str, models: ModelRegistry, where: str
) -> pb.ModelConfig:
    """A role's model: the name the request gives (or the operator's default for the role),
    which must be declared for the role, and its sampling settings or the role's.

    Raises:
        ModelChoiceError: the name is not declared for the role (``where`` names the field).
    """
    spec = spec or ModelSpec()
    name = spec.model or models.default_for(role)
    models.get(name, role, f"{where}.model")
    role_defaults = _ROLE_DEFAULTS[role]
    cfg = pb.ModelConfig(
        model=name,
        temperature=spec.temperature
        if spec.temperature is not None
        else role_defaults["temperature"],
        max_tokens=spec.max_tokens or int(role_defaults["max_tokens"]),
    )
    if spec.top_p is not None:
        cfg.top_p = spec.top_p
    return cfg


def embedder_config(name: str | None, models: ModelRegistry, where: str) -> pb.ModelConfig:
    """The embedder role's model: a declared embedding model, or the offline default."""
    name = name or models.default_for("embedder")
    models.get(name, "embedder", where)
    return pb.ModelConfig(model=name)


def recipe_to_proto(spec: RecipeSpec, models: ModelRegistry) -> pb.Recipe:
    """The immutable recipe a job records: every role resolved to a declared model's name."""
    given = spec.models
    responders = given.responders or _DEFAULT_RESPONDERS
    roles = pb.RoleModels(
        generator=model_config(given.generator, "generator", models, "models.generator"),
        responders=[
            model_config(r, "responder", models, f"models.responders[{n}]")
            for n, r in enumerate(responders)
        ],
        judge=model_config(given.judge, "judge", models, "models.judge"),
        tagger=model_config(given.tagger, "tagger", models, "models.tagger"),
        embedder=embedder_config(given.embedder, models, "models.embedder"),
    )
    if given.target is not None:
        roles.target.CopyFrom(model_config(given.target, "responder", models, "models.target"))
    recipe = pb.Recipe(
        name=spec.name,
        count=spec.count,
        languages=[
            pb.LanguageShare(code=lang.code, share=lang.share or 0.0) for lang in spec.languages
        ],
        models=roles,
        responses_per_instruction=spec.responses_per_instruction,
        budget=spec.budget,
        seed=spec.seed,
        min_margin=spec.min_margin
        if spec.min_margin is not None
        else (10.0 if spec.judging.mode == "pairwise" else 1.0),
        judging=spec.judging.to_proto(),
        nodes=spec.nodes,
        distribution=spec.distribution,
        node_counts=[pb.NodeCount(node_id=k, count=v) for k, v in (spec.node_counts or {}).items()],
        difficulties=[pb.Share(name=d.name, share=d.share or 0.0) for d in spec.difficulties],
        strategies=[pb.Share(name=s.name, share=s.share or 0.0) for s in spec.strategies],
        rubric_rounds=spec.rubric_rounds,
        no_cache=not spec.cache,
        no_language_check=not spec.language_check,
        instruction_attempts=spec.instruction_attempts,
        near_duplicate=spec.near_duplicate,
        contrastive=spec.contrastive,
        max_candidates=spec.max_candidates,
    )
    if spec.selection is not None:
        recipe.selection.CopyFrom(spec.selection.to_proto())
        if not spec.selection.budget:
            recipe.selection.budget = spec.budget
    taxonomy, _, version = spec.taxonomy.partition("@")
    recipe.taxonomy_id, recipe.taxonomy_version = taxonomy, version
    if spec.task_taxonomy:
        tasks, _, task_version = spec.task_taxonomy.partition("@")
        recipe.task_taxonomy_id, recipe.task_taxonomy_version = tasks, task_version
    if isinstance(spec.task_types, list):
        recipe.task_types.extend(
            pb.Share(name=t.name, share=t.share or 0.0) for t in spec.task_types
        )
    return recipe
