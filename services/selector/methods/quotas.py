"""Quotas: a budget shared between clusters, and the comparisons comparative scoring spends."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from services.selector.methods.clusters import ClusterResult
from taxoforge.apportion import capped_largest_remainder
from taxoforge.selection import QuotaRule

__all__ = ["Rule", "plan_comparisons", "quotas"]

Rule = QuotaRule


def _as_list(values: Sequence[int] | Mapping[int, int]) -> list[int]:
    if isinstance(values, Mapping):
        if any(c < 0 for c in values):
            raise ValueError("cluster indices must be >= 0")
        size = max(values, default=-1) + 1
        return [int(values.get(c, 0)) for c in range(size)]
    return [int(v) for v in values]


def quotas(sizes: Sequence[int] | Mapping[int, int], total: int, rule: Rule) -> list[int]:
    """Integer quota per cluster: sums to exactly min(total, sum of sizes), none above its size.

    Weights are size ("proportional"), sqrt(size) ("sqrt": small clusters get more than their
    share) or 1 ("equal"); shares are rounded by largest remainder, and what a capped cluster
    cannot use goes to the others by the same rule. Ties go to the lower cluster index.

    Args:
        sizes: per cluster (a sequence, or cluster index -> size; missing indices are 0).
        total: the budget in the same unit as the sizes (records or tokens).
        rule: "proportional", "sqrt" or "equal".
    """
    caps = _as_list(sizes)
    if any(s < 0 for s in caps):
        raise ValueError("cluster sizes must be >= 0")
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if rule == "proportional":
        weights = [float(s) for s in caps]
    elif rule == "sqrt":
        weights = [math.sqrt(s) for s in caps]
    elif rule == "equal":
        weights = [1.0 if s > 0 else 0.0 for s in caps]
    else:
        raise ValueError(f"unknown quota rule {rule!r}")
    return capped_largest_remainder(weights, caps, total)


def plan_comparisons(
    result: ClusterResult,
    refs: Sequence[int],
    quotas_by_cluster: Sequence[int] | Mapping[int, int],
    calls_budget: int,
    priors: Sequence[float | None],
    seed: int,
    calls_per_comparison: int = 2,
) -> list[int]:
    """Which items to compare with their cluster's reference (2 judge calls each, both orders,
    plus the retries ``calls_per_comparison`` leaves room for).

    ``calls_budget`` 0 compares every item but the references. Otherwise at most
    ``calls_budget // calls_per_comparison`` comparisons, so that every call they may send,
    retries included, fits the budget; shared between clusters in proportion to their quota
    (largest remainder, water-filled; a cluster with quota 0 gets none, one never gets more
    than its non-reference members). Inside a cluster, the highest ``priors`` first (the judge
    score when known); items with no prior follow in a seeded random order, which also breaks
    ties.

    Returns:
        Item indices, ascending.
    """
    n = len(result.assignment)
    if len(priors) != n:
        raise ValueError(f"{len(priors)} priors for {n} items")
    if calls_budget < 0:
        raise ValueError(f"calls_budget must be >= 0, got {calls_budget}")
    if calls_per_comparison < 2:
        raise ValueError(f"a comparison is at least 2 calls, got {calls_per_comparison}")
    ref_set = {r for r in refs if r >= 0}
    members: list[list[int]] = [[] for _ in range(result.k)]
    for i, c in enumerate(result.assignment.tolist()):
        if i not in ref_set:
            members[c].append(i)
    if calls_budget == 0:
        return sorted(i for group in members for i in group)
    shares = _as_list(quotas_by_cluster)
    weights = [float(shares[c]) if c < len(shares) else 0.0 for c in range(result.k)]
    alloc = capped_largest_remainder(
        weights, [len(m) for m in members], calls_budget // calls_per_comparison
    )
    tiebreak = np.random.default_rng(seed).permutation(n)
    chosen: list[int] = []
    for group, take in zip(members, alloc, strict=True):
        if take:
            ranked = sorted(group, key=lambda i: _prior_key(priors[i], int(tiebreak[i])))
            chosen.extend(ranked[:take])
    return sorted(chosen)


def _prior_key(prior: float | None, tie: int) -> tuple[bool, float, int]:
    return (prior is None, -(prior if prior is not None else 0.0), tie)
