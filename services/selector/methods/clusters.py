"""Clusters of candidates: on their normalized tags, on embeddings (spherical k-means), or one
per key (a taxonomy node); and each cluster's reference sample (its medoid)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from services.selector.methods.kmeans import spherical_kmeans
from services.selector.methods.vectors import CHUNK, normalize_rows, row_norms

__all__ = [
    "UNTAGGED",
    "ClusterResult",
    "Points",
    "auto_clusters",
    "cluster_by_key",
    "cluster_by_tags",
    "cluster_by_vectors",
    "references",
]

# The label of the extra cluster of items with no tags (or no key, or a zero vector).
UNTAGGED = "(untagged)"

_MAX_CLUSTERS = 500
# Scores this close count as tied (then the lower index wins).
_DECIMALS = 6


@dataclass
class Points:
    """The item vectors clustering used: distinct rows (L2-normalized, float32, dense or CSR;
    a zero row for an item with nothing) and each item's row."""

    matrix: Any
    row_of: NDArray[np.int64]


@dataclass
class ClusterResult:
    """Which cluster each item is in, and what each cluster is called.

    Clusters are numbered largest first (ties: by lowest item index for k-means clusters, by
    key for key clusters); the untagged cluster, when there is one, comes last.
    """

    assignment: NDArray[np.int64]
    labels: list[str]
    sizes: list[int]
    # Index of the cluster of items with no tags (no key, zero vector); -1 when there is none.
    untagged: int = -1
    points: Points | None = field(default=None, repr=False, compare=False)

    @property
    def k(self) -> int:
        """The number of clusters, the untagged one included."""
        return len(self.labels)


def auto_clusters(n: int) -> int:
    """A default k for n items: round(sqrt(n / 2)), between 1 and 500."""
    return max(1, min(_MAX_CLUSTERS, round(math.sqrt(max(n, 0) / 2))))


def _renumber(
    assignment: NDArray[np.int64], untagged_mask: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], list[int], int]:
    """Number the non-empty clusters largest first (ties: lower first item), the untagged
    items last. Returns the new assignment, sizes and the untagged cluster's index (or -1)."""
    n = len(assignment)
    tagged = ~untagged_mask
    ids = assignment[tagged]
    if ids.size:
        present = np.unique(ids)
        sizes = np.bincount(ids)[present]
        first = np.full(int(present.max()) + 1, n, dtype=np.int64)
        np.minimum.at(first, ids, np.flatnonzero(tagged))
        order = np.lexsort((first[present], -sizes))
        new_id = np.full(int(present.max()) + 1, -1, dtype=np.int64)
        new_id[present[order]] = np.arange(len(present))
        out_sizes = [int(s) for s in sizes[order]]
    else:
        new_id = np.zeros(1, dtype=np.int64)
        out_sizes = []
    out = np.full(n, -1, dtype=np.int64)
    out[tagged] = new_id[ids]
    untagged = -1
    if untagged_mask.any():
        untagged = len(out_sizes)
        out[untagged_mask] = untagged
        out_sizes.append(int(untagged_mask.sum()))
    return out, out_sizes, untagged


def _tag_labels(
    assignment: NDArray[np.int64], k: int, tag_sets: Sequence[Sequence[str]], untagged: int
) -> list[str]:
    counts: list[Counter[str]] = [Counter() for _ in range(k)]
    for cluster, tags in zip(assignment.tolist(), tag_sets, strict=True):
        counts[cluster].update(set(tags))
    labels = []
    for c in range(k):
        top = sorted(counts[c].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        labels.append(UNTAGGED if c == untagged else ", ".join(t for t, _ in top))
    return labels


def cluster_by_tags(
    tags: Sequence[Sequence[str]],
    k: int,
    seed: int,
    tag_vectors: Mapping[str, NDArray[np.floating[Any]]] | None = None,
) -> ClusterResult:
    """Cluster items on their (normalized) tags with spherical k-means.

    Each item is the IDF-weighted sum of its tags (one-hot in a sparse matrix, or the tags'
    embeddings when ``tag_vectors`` is given), L2-normalized. Items with the same tag set are
    one weighted point, so they always share a cluster and k is capped at the number of
    distinct tag sets. Items with no tags form one extra cluster, last.

    Raises:
        ValueError: k < 1, or a tag has no vector in ``tag_vectors``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = len(tags)
    sets = [tuple(sorted({t for t in item if t})) for item in tags]
    index: dict[tuple[str, ...], int] = {}
    row_of = np.fromiter((index.setdefault(s, len(index)) for s in sets), dtype=np.int64, count=n)
    uniq = list(index)
    mult = np.bincount(row_of, minlength=len(uniq)).astype(np.float32)
    df: Counter[str] = Counter()
    for s, m in zip(uniq, mult.tolist(), strict=True):
        for t in s:
            df[t] += int(m)
    vocab = sorted(df)
    col = {t: j for j, t in enumerate(vocab)}
    idf = np.array([math.log((1 + n) / (1 + df[t])) + 1.0 for t in vocab], dtype=np.float32)
    indptr = np.zeros(len(uniq) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(s) for s in uniq])
    indices = np.fromiter((col[t] for s in uniq for t in s), dtype=np.int64, count=indptr[-1])
    onehot = sparse.csr_matrix(
        (idf[indices], indices, indptr), shape=(len(uniq), len(vocab)), dtype=np.float32
    )
    matrix: Any = onehot
    if tag_vectors is not None and vocab:
        missing = [t for t in vocab if t not in tag_vectors]
        if missing:
            raise ValueError(f"{len(missing)} tags have no vector, e.g. {missing[0]!r}")
        table = np.vstack([np.asarray(tag_vectors[t], dtype=np.float32) for t in vocab])
        matrix = np.asarray(onehot @ table, dtype=np.float32)
    matrix = normalize_rows(matrix)
    empty_rows = row_norms(matrix) < 1e-6
    live = np.flatnonzero(~empty_rows)
    row_cluster = np.zeros(len(uniq), dtype=np.int64)
    if live.size:
        kk = min(k, int(live.size))
        row_cluster[live] = spherical_kmeans(matrix[live], mult[live], kk, seed)
    assignment, sizes, untagged = _renumber(row_cluster[row_of], empty_rows[row_of])
    labels = _tag_labels(assignment, len(sizes), sets, untagged)
    return ClusterResult(assignment, labels, sizes, untagged, Points(matrix, row_of))


def cluster_by_key(keys: Sequence[str]) -> ClusterResult:
    """One cluster per distinct key (a taxonomy node path), labelled with the key; largest
    first, ties by key; items with an empty key form the untagged cluster, last."""
    counts = Counter(k for k in keys if k)
    ordered = sorted(counts, key=lambda key: (-counts[key], key))
    number = {key: i for i, key in enumerate(ordered)}
    untagged = len(ordered) if any(not k for k in keys) else -1
    assignment = np.fromiter(
        (number[k] if k else untagged for k in keys), dtype=np.int64, count=len(keys)
    )
    sizes = [counts[key] for key in ordered]
    labels = list(ordered)
    if untagged >= 0:
        sizes.append(len(keys) - sum(sizes))
        labels.append(UNTAGGED)
    return ClusterResult(assignment, labels, sizes, untagged)


def cluster_by_vectors(
    vectors: NDArray[np.floating[Any]],
    k: int,
    seed: int,
    tags: Sequence[Sequence[str]] | None = None,
) -> ClusterResult:
    """Spherical k-means on the rows of ``vectors`` (L2-normalized here), e.g. query embeddings.

    Identical rows are one weighted point (k is capped at the distinct rows); zero rows form
    the untagged cluster. Labels are the 3 most frequent ``tags`` when given, else
    "cluster <i>".
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = normalize_rows(vectors)
    n = x.shape[0]
    uniq, inverse = np.unique(x, axis=0, return_inverse=True)
    row_of = np.asarray(inverse, dtype=np.int64).ravel()
    mult = np.bincount(row_of, minlength=len(uniq)).astype(np.float32)
    empty_rows = row_norms(uniq) < 1e-6
    live = np.flatnonzero(~empty_rows)
    row_cluster = np.zeros(len(uniq), dtype=np.int64)
    if live.size:
        row_cluster[live] = spherical_kmeans(uniq[live], mult[live], min(k, live.size), seed)
    assignment, sizes, untagged = _renumber(row_cluster[row_of], empty_rows[row_of])
    if tags is not None:
        if len(tags) != n:
            raise ValueError(f"{len(tags)} tag sets for {n} vectors")
        labels = _tag_labels(assignment, len(sizes), tags, untagged)
    else:
        labels = [UNTAGGED if c == untagged else f"cluster {c}" for c in range(len(sizes))]
    return ClusterResult(assignment, labels, sizes, untagged, Points(uniq, row_of))


def references(
    result: ClusterResult,
    vectors: NDArray[np.floating[Any]] | Any | None = None,
    seed: int = 0,
) -> list[int]:
    """Each cluster's reference sample: its medoid, the item closest to the cluster's centroid
    (ties: the lower index).

    Args:
        result: the clusters.
        vectors: one row per item (dense or scipy sparse), e.g. query embeddings; default: the
            vectors the clustering used. With neither (key clusters), the reference is a
            seeded random member.
        seed: only for that random fallback.

    Returns:
        An item index per cluster (-1 for an empty cluster).
    """
    assignment = result.assignment
    n, k = len(assignment), result.k
    if vectors is not None:
        if vectors.shape[0] != n:
            raise ValueError(f"{vectors.shape[0]} vectors for {n} items")
        points: Points | None = Points(normalize_rows(vectors), np.arange(n, dtype=np.int64))
    else:
        points = result.points
    if points is None:
        rng = np.random.default_rng(seed)
        score = rng.random(n)
    else:
        score = _medoid_scores(points, assignment, k)
    score = np.round(score, _DECIMALS)
    order = np.lexsort((np.arange(n), -score, assignment))
    # Each cluster's first item in that order (clusters are contiguous in it).
    refs = np.full(k, -1, dtype=np.int64)
    grouped = assignment[order]
    first = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if n else order
    refs[grouped[first]] = order[first]
    return [int(r) for r in refs]


def _medoid_scores(points: Points, assignment: NDArray[np.int64], k: int) -> NDArray[np.float64]:
    """Each item's cosine with its cluster's mean direction."""
    x, row_of = points.matrix, points.row_of
    n = len(assignment)
    member = sparse.csr_matrix(
        (np.ones(n, dtype=np.float32), (assignment, row_of)),
        shape=(k, x.shape[0]),
        dtype=np.float32,
    )
    sums = member @ x
    centroid = normalize_rows(sums.toarray() if sparse.issparse(sums) else np.asarray(sums))
    if sparse.issparse(x):
        item = sparse.csr_matrix(x[row_of])
        rows = np.repeat(np.arange(n), np.diff(item.indptr))
        vals = item.data.astype(np.float64) * centroid[assignment[rows], item.indices]
        out = np.asarray(np.bincount(rows, weights=vals, minlength=n), dtype=np.float64)
        return out
    score = np.empty(n, dtype=np.float64)
    for start in range(0, n, CHUNK):
        part = slice(start, start + CHUNK)
        score[part] = np.einsum("ij,ij->i", x[row_of[part]], centroid[assignment[part]])
    return score
