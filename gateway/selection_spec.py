"""How a job's datasets are chosen: the body's ``selection`` object."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from taxoforge.selection import ExportFormat, QuotaRule
from taxoforge.selection import SelectionMethod as Method
from taxoforge.v1 import common_pb2 as pb

__all__ = ["BENCHMARK_NAME", "Method", "SelectionSpecModel"]

_STRICT = ConfigDict(extra="forbid")
BENCHMARK_NAME = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class SelectionSpecModel(BaseModel):
    """How the datasets are chosen (TACOS by default), deduplicated, decontaminated and
    exported. Every field has a default."""

    model_config = _STRICT

    method: Method = Field(
        default="tacos",
        description="tacos (clusters, quotas, best first), or a method to compare it with.",
    )
    budget: int = Field(
        default=0, ge=0, lt=2**63, description="Records (or tokens) to keep; 0: all."
    )
    budget_unit: Literal["records", "tokens"] = "records"
    quota: QuotaRule = Field(
        default="proportional", description="How the budget is shared between clusters."
    )
    cluster_by: Literal["tags", "node", "embedding"] | None = Field(
        default=None,
        description="Default: node for generated data, tags (TACOS open tags) for imports.",
    )
    clusters: int = Field(default=0, ge=0, le=5000, description="k; 0: sqrt(n/2), at most 500.")
    scoring: Literal["comparative", "judge"] | None = Field(
        default=None,
        description="comparative: each sample against its cluster's reference, 1-100, both "
        "orders; judge: the generation job's scores. Default: judge for generated data, "
        "comparative for imports.",
    )
    comparison_budget: int = Field(
        default=0,
        ge=0,
        lt=2**63,
        description="Judge calls comparative scoring may spend; 0: 2 a sample.",
    )
    min_tag_frequency: int = Field(default=2, ge=1, le=1000)
    tag_merge_threshold: float = Field(default=0.85, gt=0, le=1)
    near_duplicate: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="Exact word-shingle Jaccard from which two records are near duplicates "
        "(every compared part: instruction, its input, and in record mode the answer); 0: "
        "exact only.",
    )
    dedup: Literal["record", "query"] = Field(
        default="record",
        description="record: duplicates share query and answer (several answers to one "
        "prompt all reach quality selection); query: the query alone.",
    )
    decontaminate: list[str] = Field(
        default_factory=list, description="Registered benchmarks (PUT /v1/benchmarks/{name})."
    )
    ngram: int = Field(default=10, ge=3, le=50)
    contamination_overlap: float = Field(
        default=0.0, ge=0, le=1, description="Fraction of a record's n-grams; 0: any overlap."
    )
    diversity_threshold: float = Field(default=0.9, gt=0, le=1, description="DEITA cosine.")
    score_threshold: float = Field(default=90.0, ge=1, le=100, description="AlpaGasus, 1-100.")
    compare: list[Method] | None = Field(
        default=None, description="Methods measured on the same data; default: all others."
    )
    exports: list[ExportFormat] | None = Field(default=None, description="Default: all six.")
    seed: int = Field(default=0, ge=0, lt=2**63)
    license: str = Field(default="other", min_length=1, max_length=64)

    @model_validator(mode="after")
    def _check(self) -> SelectionSpecModel:
        for name in self.decontaminate:
            if not re.match(BENCHMARK_NAME, name):
                raise ValueError(f"benchmark name {name!r} must match {BENCHMARK_NAME}")
        return self

    def to_proto(self) -> pb.SelectionSpec:
        spec = pb.SelectionSpec(
            method=self.method,
            budget=self.budget,
            budget_unit=self.budget_unit,
            quota=self.quota,
            cluster_by=self.cluster_by or "",
            clusters=self.clusters,
            scoring=self.scoring or "",
            comparison_budget=self.comparison_budget,
            min_tag_frequency=self.min_tag_frequency,
            tag_merge_threshold=self.tag_merge_threshold,
            near_duplicate=self.near_duplicate,
            decontaminate=self.decontaminate,
            ngram=self.ngram,
            contamination_overlap=self.contamination_overlap,
            diversity_threshold=self.diversity_threshold,
            score_threshold=self.score_threshold,
            compare=self.compare or [],
            exports=self.exports or [],
            seed=self.seed,
            license=self.license,
            dedup=self.dedup,
        )
        return spec
