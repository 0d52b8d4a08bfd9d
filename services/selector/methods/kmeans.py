"""Spherical k-means: unit rows clustered by cosine, weighted by multiplicity, seeded.

Neither scipy's ``kmeans2`` nor scikit-learn's ``KMeans`` does this variant: both move centers
to the plain (Euclidean) mean, where cosine clustering needs the mean *direction*; ``kmeans2``
also takes no sample weights (identical tag sets are one weighted row here) and no sparse
input (the tag matrix is a sparse one-hot of the whole vocabulary). So it stays a small,
vectorized implementation: greedy k-means++ seeding, then Lloyd rounds on cosine.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from services.selector.methods.vectors import CHUNK, normalize_rows

__all__ = ["spherical_kmeans"]

# Spherical k-means stops when stable (at most 1 in 1000 distinct rows changed cluster in the
# last round: the long tail of rounds that move a handful of rows costs more than it changes),
# or after this many rounds.
_MAX_ROUNDS = 30
_STABLE = 1000
# Inputs up to this many rows x clusters take the best of this many seeded runs.
_RESTARTS = 3
_RESTART_SIZE = 2_000_000
# k-means++ seeds on at most this many distinct rows (drawn with the seed): seeding is the
# slow part of clustering large inputs, and a sample this size still gives every sizeable
# group its center.
_SEED_SAMPLE = 20_000


def _dense_row(matrix: Any, i: int) -> NDArray[np.float32]:
    row = matrix[i].toarray().ravel() if sparse.issparse(matrix) else matrix[i]
    out: NDArray[np.float32] = np.asarray(row, dtype=np.float32)
    return out


def _nearest(x: Any, centers: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Each row's most similar center (cosine: rows and centers are unit vectors) and the
    similarity; computed in blocks so the scratch matrix stays small."""
    n = x.shape[0]
    labels = np.empty(n, dtype=np.int64)
    best = np.empty(n, dtype=np.float32)
    ct = np.ascontiguousarray(centers.T)
    for start in range(0, n, CHUNK):
        sims = np.asarray(x[start : start + CHUNK] @ ct)
        top = np.argmax(sims, axis=1)
        labels[start : start + CHUNK] = top
        best[start : start + CHUNK] = np.take_along_axis(sims, top[:, None], axis=1).ravel()
    return labels, best


def _kmeanspp(
    x: Any, weights: NDArray[np.float32], k: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Greedy k-means++ seeding (weighted by multiplicity).

    Each next center is the best of a few rows drawn with probability proportional to weight x
    squared distance (2 - 2 cos) to the nearest center so far: the one that lowers the total
    distance most. The greedy pick keeps whole groups from going without a center.
    """
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    w = weights.astype(np.float64)
    first = min(int(np.searchsorted(np.cumsum(w), rng.random() * float(w.sum()))), n - 1)
    centers = [_dense_row(x, first)]
    best = np.asarray(x @ centers[0], dtype=np.float64).ravel()
    for _ in range(1, k):
        dist = np.clip(1.0 - best, 0.0, None)
        dist[dist < 1e-6] = 0.0
        mass = np.cumsum(w * dist)
        total = float(mass[-1])
        if total <= 0.0:
            break
        picks = np.searchsorted(mass, rng.random(trials) * total, side="right")
        picks = np.unique(np.minimum(picks, n - 1))
        rows = x[picks]
        sims = np.asarray(x @ (rows.T.toarray() if sparse.issparse(rows) else rows.T))
        gain = np.maximum(sims, best[:, None])
        cost = w @ (1.0 - gain)
        choice = int(np.argmin(cost))
        centers.append(_dense_row(x, int(picks[choice])))
        best = gain[:, choice]
    return np.vstack(centers).astype(np.float32)


def _centroids(
    x: Any, weights: NDArray[np.float32], labels: NDArray[np.int64], k: int
) -> NDArray[np.float32]:
    """Weighted mean direction of each cluster's rows, unit length (zero for an empty one)."""
    n = x.shape[0]
    member = sparse.csr_matrix((weights, (labels, np.arange(n))), shape=(k, n), dtype=np.float32)
    sums = member @ x
    dense = sums.toarray() if sparse.issparse(sums) else np.asarray(sums)
    out: NDArray[np.float32] = normalize_rows(dense)
    return out


def spherical_kmeans(x: Any, weights: NDArray[np.float32], k: int, seed: int) -> NDArray[np.int64]:
    """Cluster unit rows by cosine: k-means++ seeding, then assign/recenter until stable (no
    row moves; with 1000 rows or more, at most 1 in 1000).

    Small inputs (rows x k up to 2 million) keep the best of 3 seeded runs (lowest weighted
    distance): cheap there, and it avoids the rare seeding that leaves a group without a
    center. Returns a cluster per row (some may be empty: the caller drops them).
    """
    rng = np.random.default_rng(seed)
    runs = _RESTARTS if x.shape[0] * k <= _RESTART_SIZE else 1
    best_labels: NDArray[np.int64] | None = None
    best_cost = math.inf
    for _ in range(runs):
        labels, cost = _lloyd(x, weights, k, rng)
        if cost < best_cost - 1e-9:
            best_labels, best_cost = labels, cost
    assert best_labels is not None
    return best_labels


def _lloyd(
    x: Any, weights: NDArray[np.float32], k: int, rng: np.random.Generator
) -> tuple[NDArray[np.int64], float]:
    """One seeded k-means run; returns the labels and their weighted distance (sum of w x
    (1 - cos to the center)). An emptied cluster is reseeded with the worst-served row of a
    cluster that can spare one."""
    if x.shape[0] > _SEED_SAMPLE:
        sample = np.sort(rng.choice(x.shape[0], size=_SEED_SAMPLE, replace=False))
        centers = _kmeanspp(x[sample], weights[sample], k, rng)
    else:
        centers = _kmeanspp(x, weights, k, rng)
    k = centers.shape[0]
    tolerance = x.shape[0] // _STABLE
    labels: NDArray[np.int64] | None = None
    best = np.zeros(x.shape[0], dtype=np.float32)
    for _ in range(_MAX_ROUNDS):
        new, best = _nearest(x, centers)
        moved = x.shape[0] if labels is None else int(np.count_nonzero(new != labels))
        labels = new
        if moved <= tolerance:
            break
        counts = np.bincount(labels, minlength=k)
        if (counts == 0).any():
            worst = np.argsort(best, kind="stable")
            pos = 0
            for empty in np.flatnonzero(counts == 0):
                while pos < len(worst) and counts[labels[worst[pos]]] <= 1:
                    pos += 1
                if pos == len(worst):
                    break
                row = int(worst[pos])
                counts[labels[row]] -= 1
                labels[row] = empty
                counts[empty] = 1
                pos += 1
        centers = _centroids(x, weights, labels, k)
    assert labels is not None
    cost = float(weights.astype(np.float64) @ (1.0 - best.astype(np.float64)))
    return labels, cost
