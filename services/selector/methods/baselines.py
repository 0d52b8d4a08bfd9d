"""The baselines TACOS is measured against on the same candidates: AlpaGasus-style (score
threshold), random, longest response first, and best score first without clusters."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.selector.examples import Candidate
from services.selector.methods.ranking import Budget, fill

__all__ = ["alpagasus", "best_score", "longest", "random_sample"]


def alpagasus(
    order: Sequence[int], cands: Sequence[Candidate], budget: Budget, threshold: float
) -> list[int]:
    """Best first among the candidates whose quality is at least ``threshold``."""
    passing = [i for i in order if (q := cands[i].quality) is not None and q >= threshold]
    return fill(passing, cands, budget)


def random_sample(cands: Sequence[Candidate], budget: Budget, seed: int) -> list[int]:
    """A seeded shuffle, taken in order."""
    shuffled = np.random.default_rng(seed).permutation(len(cands)).tolist()
    return fill(shuffled, cands, budget)


def longest(cands: Sequence[Candidate], budget: Budget) -> list[int]:
    """Longest response first (ties by item id)."""
    by_length = sorted(
        range(len(cands)), key=lambda i: (-cands[i].response_chars, cands[i].item_id, i)
    )
    return fill(by_length, cands, budget)


def best_score(order: Sequence[int], cands: Sequence[Candidate], budget: Budget) -> list[int]:
    """Best score first, without clusters."""
    return fill(order, cands, budget)
