"""DEITA-style selection: best score first, skipping a sample too close in embedding to one
already kept."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.selector.examples import Candidate
from services.selector.methods.ranking import Budget
from services.selector.methods.vectors import normalize_rows

__all__ = ["Embeddings", "deita"]

# Candidates per block in the diversity filter.
_DEITA_BLOCK = 512
# DEITA's vectors: one row per candidate, or a function from candidate indices to their rows.
Embeddings = NDArray[np.floating[Any]] | Callable[[NDArray[np.int64]], NDArray[np.floating[Any]]]


def deita(
    order: list[int],
    cands: Sequence[Candidate],
    budget: Budget,
    embeddings: Embeddings,
    threshold: float,
) -> list[int]:
    """Best first, skipping a candidate whose cosine to any one already chosen is above
    ``threshold``. Blocks of candidates are compared with the chosen set in one product, then
    with each other; the cost grows with (candidates scanned) x (chosen). With a function for
    ``embeddings``, only the blocks the walk reaches are embedded."""
    vectors_for: Callable[[NDArray[np.int64]], NDArray[np.floating[Any]]]
    if callable(embeddings):
        embed = embeddings

        def vectors_for(rows: NDArray[np.int64]) -> NDArray[np.floating[Any]]:
            normalized: NDArray[np.floating[Any]] = normalize_rows(
                np.asarray(embed(rows), dtype=np.float32)
            )
            return normalized
    else:
        x = normalize_rows(embeddings)
        if x.shape[0] != len(cands):
            raise ValueError(f"{x.shape[0]} embeddings for {len(cands)} candidates")

        def vectors_for(rows: NDArray[np.int64]) -> NDArray[np.floating[Any]]:
            picked: NDArray[np.floating[Any]] = x[rows]
            return picked

    limit = budget.amount if budget.amount and budget.unit == "records" else len(cands)
    left = budget.amount if budget.amount and budget.unit == "tokens" else -1
    tokens = np.fromiter((c.tokens for c in cands), dtype=np.int64, count=len(cands))
    ordered = np.asarray(order, dtype=np.int64)
    # The smallest candidate still ahead: once it cannot fit, nothing further can.
    smallest_ahead = np.minimum.accumulate(tokens[ordered][::-1])[::-1]
    kept = np.empty((0, 0), dtype=np.float32)
    count = 0
    out: list[int] = []
    for start in range(0, len(order), _DEITA_BLOCK):
        block = ordered[start : start + _DEITA_BLOCK]
        if left >= 0:
            if smallest_ahead[start] > left:
                break
            block = block[tokens[block] <= left]
        if not len(block):
            continue
        vecs = vectors_for(block)
        if not kept.size:
            kept = np.empty((max(1, min(limit, 1024)), vecs.shape[1]), dtype=np.float32)
        if count:
            clear = np.max(vecs @ kept[:count].T, axis=1) <= threshold
            block, vecs = block[clear], vecs[clear]
        gram = vecs @ vecs.T
        local: list[int] = []
        for j, i in enumerate(block.tolist()):
            t = int(tokens[i])
            if left >= 0 and t > left:
                continue
            if local and float(np.max(gram[j, local])) > threshold:
                continue
            local.append(j)
            out.append(i)
            if count == kept.shape[0]:
                kept = np.concatenate([kept, np.empty_like(kept)])
            kept[count] = vecs[j]
            count += 1
            if left >= 0:
                left -= t
            if len(out) == limit:
                return out
    return out
