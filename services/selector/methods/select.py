"""One selection method run on the candidates: TACOS, or a baseline it is measured against.

Everything under ``services.selector.methods`` is pure and deterministic given a seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.selector.examples import Candidate
from services.selector.methods.baselines import alpagasus, best_score, longest, random_sample
from services.selector.methods.deita import Embeddings, deita
from services.selector.methods.quotas import Rule
from services.selector.methods.ranking import Budget, rank
from services.selector.methods.tacos import tacos
from taxoforge.selection import SELECTION_METHODS

__all__ = ["Selected", "select"]


@dataclass
class Selected:
    """What a method chose: candidate indices in its order (best first), and for TACOS what
    each cluster was allotted (in the budget's unit) and how many records it gave."""

    method: str
    chosen: list[int]
    tokens: int
    quota: dict[int, int] = field(default_factory=dict)
    taken: dict[int, int] = field(default_factory=dict)


def select(
    method: str,
    cands: Sequence[Candidate],
    budget: Budget,
    *,
    rule: Rule = "proportional",
    seed: int = 0,
    embeddings: Embeddings | None = None,
    diversity_threshold: float = 0.9,
    score_threshold: float = 90.0,
) -> Selected:
    """Choose candidates for ``budget`` with one method; the chosen come back best first.

    Ranking everywhere is Candidate.quality, unscored last, ties by judge score then item id;
    "random" is a seeded shuffle and "longest" orders by response length (ties by item id).
    Under a tokens budget each method takes in its order while a candidate fits and skips
    one that does not.

    Args:
        method: "tacos" (per-cluster quotas over Candidate.cluster by ``rule``; in tokens the
            leftover is filled best first), "deita" (needs ``embeddings``, one row per
            candidate or a function giving the rows of the candidates asked for; skips a
            candidate whose cosine to one already chosen is above ``diversity_threshold``),
            "alpagasus" (quality >= ``score_threshold``), "random", "longest" or "score".
        cands: the candidates (TACOS reads their ``cluster``).
        budget: records or tokens; amount 0 keeps every candidate a method would take.

    Raises:
        ValueError: an unknown method, or "deita" without matching embeddings.
    """
    order = rank(cands)
    quota: dict[int, int] = {}
    taken: dict[int, int] = {}
    if method == "tacos":
        chosen, quota = tacos(order, cands, budget, rule)
        counts = Counter(max(cands[i].cluster, -1) for i in chosen)
        taken = {cid: counts.get(cid, 0) for cid in quota}
    elif method == "deita":
        if embeddings is None:
            raise ValueError("deita needs one embedding per candidate")
        chosen = deita(order, cands, budget, embeddings, diversity_threshold)
    elif method == "alpagasus":
        chosen = alpagasus(order, cands, budget, score_threshold)
    elif method == "random":
        chosen = random_sample(cands, budget, seed)
    elif method == "longest":
        chosen = longest(cands, budget)
    elif method == "score":
        chosen = best_score(order, cands, budget)
    else:
        raise ValueError(
            f"unknown selection method {method!r}; one of {', '.join(SELECTION_METHODS)}"
        )
    tokens = sum(cands[i].tokens for i in chosen)
    return Selected(method, chosen, tokens, quota, taken)
