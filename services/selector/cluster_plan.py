"""What the cluster step decides, pure: ``clusters.json`` (each item's cluster and tags, each
cluster's label and reference, the items compared), which samples comparative scoring
compares with their cluster's reference, and the judge calls each comparison may send.

The comparison budget is a ceiling on judge calls, retries included. It is kept by planning:
each comparison gets an equal share of the budget (``CompareTask.max_calls``), at least its two
orders and ``spare_calls`` retries, and the judge sends no call past a comparison's share (it
fails instead, and the sample is ranked unscored). Per-comparison shares need no counter shared
by judge replicas and hold under redelivery; the price is that a comparison's unused retries
cannot go to another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.selector.examples import Candidate
from services.selector.methods.clusters import ClusterResult
from services.selector.methods.quotas import plan_comparisons, quotas
from taxoforge.v1 import common_pb2 as pb

__all__ = ["SPARE_CALLS", "ClusterPlan", "comparison_calls", "comparison_plan"]

# Retries a comparison may send beyond its two orders (SelectorSettings.comparison_spare_calls).
SPARE_CALLS = 1


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
    spare_calls: int = SPARE_CALLS,
) -> list[int]:
    """The samples comparative scoring compares with their reference (none when scoring
    is by the generation job's judge): as many as the comparison budget pays for at two
    orders and ``spare_calls`` retries each (two orders only when it cannot pay for one)."""
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
    budget = int(spec.comparison_budget)
    each = 2 + max(0, spare_calls)
    return plan_comparisons(
        result, refs, share, budget, priors, int(spec.seed), each if budget >= each else 2
    )


def comparison_calls(budget: int, compared: int) -> tuple[int, str]:
    """The judge calls each of ``compared`` comparisons may send (0: no limit) so that all of
    them together stay within ``budget``, and the rule, as the report says it."""
    if budget <= 0 or compared == 0:
        return 0, "no comparison budget: every comparison may retry as the judge client does"
    each = budget // compared
    return each, (
        f"{compared} comparisons planned, each with at most {each} judge calls (both orders "
        f"and {each - 2} retries), so that {compared * each} <= the budget of {budget} calls; "
        "a comparison that runs out of calls fails and its sample is ranked unscored"
    )
