"""What the cluster step decides, pure: ``clusters.json`` (each item's cluster and tags, each
cluster's label and reference, the items compared), and which samples comparative scoring
compares with their cluster's reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.selector.examples import Candidate
from services.selector.methods.clusters import ClusterResult
from services.selector.methods.quotas import plan_comparisons, quotas
from taxoforge.v1 import common_pb2 as pb

__all__ = ["ClusterPlan", "comparison_plan"]


@dataclass
class ClusterPlan:
    """clusters.json: what the select step reads."""

    assignment: list[int]
    labels: list[str]
    references: list[str]
    tags: list[list[str]]
    compared: list[str]

    def to_json(self, candidates: list[Candidate]) -> dict[str, Any]:
        return {
            "items": [c.item_id for c in candidates],
            "assignment": self.assignment,
            "labels": self.labels,
            "references": self.references,
            "tags": self.tags,
            "compared": self.compared,
        }


def comparison_plan(
    spec: pb.SelectionSpec,
    candidates: list[Candidate],
    result: ClusterResult,
    refs: list[int],
) -> list[int]:
    """The samples comparative scoring compares with their reference (none when scoring
    is by the generation job's judge)."""
    if spec.scoring != "comparative":
        return []
    sizes = [int(s) for s in result.sizes]
    if spec.budget and spec.budget_unit == "records":
        share = quotas(sizes, int(spec.budget), spec.quota)  # type: ignore[arg-type]
    elif spec.budget:  # tokens: the records the budget buys at the mean size
        mean = max(1.0, sum(c.tokens for c in candidates) / max(1, len(candidates)))
        share = quotas(sizes, int(spec.budget / mean) + 1, spec.quota)  # type: ignore[arg-type]
    else:
        share = sizes
    priors = [c.judge_score for c in candidates]
    return plan_comparisons(
        result, refs, share, int(spec.comparison_budget), priors, int(spec.seed)
    )
