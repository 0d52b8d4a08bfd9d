"""What a selection holds, so methods can be compared on the same candidates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.selector.examples import Candidate

__all__ = ["MethodMeasure", "measure"]


@dataclass(frozen=True)
class MethodMeasure:
    """What a selection holds, so methods can be compared on the same candidates."""

    method: str
    records: int
    tokens: int
    # Mean Candidate.quality over the chosen that have one; None when none has.
    mean_quality: float | None
    unscored: int
    # Distinct Candidate.cluster values >= 0, and distinct tags.
    clusters: int
    tags: int
    mean_response_chars: float


def measure(method: str, chosen: Sequence[int], cands: Sequence[Candidate]) -> MethodMeasure:
    """Records, tokens, mean quality, unscored, clusters and tags covered, mean reply length."""
    picked = [cands[i] for i in chosen]
    scores = [q for c in picked if (q := c.quality) is not None]
    return MethodMeasure(
        method=method,
        records=len(picked),
        tokens=sum(c.tokens for c in picked),
        mean_quality=sum(scores) / len(scores) if scores else None,
        unscored=len(picked) - len(scores),
        clusters=len({c.cluster for c in picked if c.cluster >= 0}),
        tags=len({t for c in picked for t in c.tags}),
        mean_response_chars=(
            sum(c.response_chars for c in picked) / len(picked) if picked else 0.0
        ),
    )
