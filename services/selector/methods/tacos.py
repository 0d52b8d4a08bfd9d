"""TACOS (arXiv 2507.03673): the budget shared between clusters by quota, each cluster keeping
its best."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.selector.examples import Candidate
from services.selector.methods.quotas import Rule, quotas
from services.selector.methods.ranking import Budget

__all__ = ["tacos"]


def tacos(
    order: list[int], cands: Sequence[Candidate], budget: Budget, rule: Rule
) -> tuple[list[int], dict[int, int]]:
    """Per-cluster quotas, best first inside each; in tokens, leftover filled best first."""
    ids = sorted({c.cluster for c in cands if c.cluster >= 0})
    if any(c.cluster < 0 for c in cands):
        ids.append(-1)  # the unclustered share one group, last
    slot = {cid: s for s, cid in enumerate(ids)}
    members: list[list[int]] = [[] for _ in ids]
    for i in order:
        members[slot[max(cands[i].cluster, -1)]].append(i)
    taken = np.zeros(len(cands), dtype=bool)
    if budget.unit == "records":
        total = budget.amount or len(cands)
        share = quotas([len(m) for m in members], total, rule)
        for group, q in zip(members, share, strict=True):
            taken[group[:q]] = True
    else:
        mass = [sum(cands[i].tokens for i in m) for m in members]
        total = budget.amount or sum(mass)
        share = quotas(mass, total, rule)
        used = 0
        for group, q in zip(members, share, strict=True):
            room = q
            for i in group:
                if cands[i].tokens <= room:
                    taken[i] = True
                    room -= cands[i].tokens
            used += q - room
        left = total - used
        for i in order:
            if not taken[i] and cands[i].tokens <= left:
                taken[i] = True
                left -= cands[i].tokens
    return [i for i in order if taken[i]], dict(zip(ids, share, strict=True))
