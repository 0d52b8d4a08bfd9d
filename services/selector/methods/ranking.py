"""What every method shares: the budget, the ranking (best first) and taking candidates in a
method's order until the budget is spent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.selector.examples import Candidate

__all__ = ["Budget", "fill", "rank"]


@dataclass(frozen=True)
class Budget:
    """How much to select: ``amount`` records or tokens; 0 keeps everything."""

    amount: int
    unit: Literal["records", "tokens"] = "records"

    def __post_init__(self) -> None:
        """Reject a negative amount or an unknown unit early, not halfway through a run."""
        if self.amount < 0:
            raise ValueError(f"budget amount must be >= 0, got {self.amount}")
        if self.unit not in ("records", "tokens"):
            raise ValueError(f"budget unit must be 'records' or 'tokens', got {self.unit!r}")


def rank(cands: Sequence[Candidate]) -> list[int]:
    """Best first: quality (unscored last), then judge score, then item id, then index."""

    def key(i: int) -> tuple[bool, float, bool, float, str, int]:
        c = cands[i]
        q, j = c.quality, c.judge_score
        return (q is None, -(q or 0.0), j is None, -(j or 0.0), c.item_id, i)

    return sorted(range(len(cands)), key=key)


def fill(order: Sequence[int], cands: Sequence[Candidate], budget: Budget) -> list[int]:
    """Take in order until the budget: records count, or tokens while each one fits."""
    if budget.amount == 0:
        return list(order)
    if budget.unit == "records":
        return list(order[: budget.amount])
    left = budget.amount
    out = []
    for i in order:
        t = cands[i].tokens
        if t <= left:
            out.append(i)
            left -= t
    return out
