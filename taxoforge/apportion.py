"""Largest-remainder apportionment: a total split into whole shares in proportion to weights.

The taxonomy service splits a recipe's count between leaves, languages and levels with it; the
selector splits a budget between clusters, each share capped at what its cluster holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["capped_largest_remainder", "largest_remainder"]


def largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    """Split ``total`` in proportion to ``weights`` into integers that sum exactly to it.

    Each share gets its floor; the units left go to the largest fractional parts (ties to
    the earlier share), so counts are exact and deterministic.
    """
    if total < 0:
        raise ValueError("total must be >= 0")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError("weights must be finite and not negative")
    mass = sum(weights)
    if not weights or mass <= 0:
        raise ValueError("weights must contain a positive value")
    quotas = [w / mass * total for w in weights]
    counts = [math.floor(q) for q in quotas]
    left = total - sum(counts)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def capped_largest_remainder(
    weights: Sequence[float], caps: Sequence[int], total: int
) -> list[int]:
    """Split ``total`` units in proportion to ``weights``, none above its cap.

    Largest remainder (ties: lower index); a capped share's surplus is split among the rest by
    the same rule until nothing more is capped (water-filling). Entries with weight or cap 0
    get nothing; the result sums to min(total, sum of the caps of positive-weight entries).
    """
    if len(weights) != len(caps):
        raise ValueError(f"{len(weights)} weights for {len(caps)} caps")
    out = [0] * len(weights)
    active = [i for i, (w, c) in enumerate(zip(weights, caps, strict=True)) if c > 0 and w > 0]
    remaining = min(int(total), sum(int(caps[i]) for i in active))
    while remaining > 0 and active:
        mass = sum(float(weights[i]) for i in active)
        full = [i for i in active if remaining * (float(weights[i]) / mass) >= caps[i]]
        if full:
            for i in full:
                out[i] = int(caps[i])
                remaining -= int(caps[i])
            active = [i for i in active if i not in set(full)]
            continue
        # Nothing reaches its cap: the plain split, whose floors stay below every cap.
        shares = largest_remainder([float(weights[i]) for i in active], remaining)
        for i, share in zip(active, shares, strict=True):
            out[i] = share
        break
    return out
