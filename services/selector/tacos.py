"""TACOS selection, and the baselines it is measured against on the same candidates.

TACOS (arXiv 2507.03673): open tags per query, normalized, then clusters on the tags; inside
each cluster every sample is scored against the cluster's reference sample; the budget is
shared between clusters by quota and each cluster keeps its best. The baselines show what that
buys: DEITA-style (best score first, skipping a sample too close in embedding to one already
kept), AlpaGasus-style (score threshold), random, longest response first, and best score first
without clusters. Everything here is pure and deterministic given a seed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from services.selector.examples import Candidate

__all__ = [
    "METHODS",
    "UNTAGGED",
    "Budget",
    "ClusterResult",
    "MethodMeasure",
    "Rule",
    "Selected",
    "auto_clusters",
    "cluster_by_key",
    "cluster_by_tags",
    "cluster_by_vectors",
    "measure",
    "plan_comparisons",
    "quotas",
    "references",
    "select",
]

Rule = Literal["proportional", "sqrt", "equal"]
METHODS: tuple[str, ...] = ("tacos", "deita", "alpagasus", "random", "longest", "score")
# The label of the extra cluster of items with no tags (or no key, or a zero vector).
UNTAGGED = "(untagged)"

_MAX_CLUSTERS = 500
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
# Rows per block when comparing items with centroids: bounds the (rows x k) scratch matrix.
_CHUNK = 16384
# Candidates per block in the DEITA diversity filter.
_DEITA_BLOCK = 512
# DEITA's vectors: one row per candidate, or a function from candidate indices to their rows.
Embeddings = NDArray[np.floating[Any]] | Callable[[NDArray[np.int64]], NDArray[np.floating[Any]]]
# Scores this close count as tied (then the lower index wins).
_DECIMALS = 6


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


@dataclass
class _Points:
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
    points: _Points | None = field(default=None, repr=False, compare=False)

    @property
    def k(self) -> int:
        """The number of clusters, the untagged one included."""
        return len(self.labels)


@dataclass
class Selected:
    """What a method chose: candidate indices in its order (best first), and for TACOS what
    each cluster was allotted (in the budget's unit) and how many records it gave."""

    method: str
    chosen: list[int]
    tokens: int
    quota: dict[int, int] = field(default_factory=dict)
    taken: dict[int, int] = field(default_factory=dict)


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


def auto_clusters(n: int) -> int:
    """A default k for n items: round(sqrt(n / 2)), between 1 and 500."""
    return max(1, min(_MAX_CLUSTERS, round(math.sqrt(max(n, 0) / 2))))


# ---- clustering ----


def _normalize_rows(matrix: Any) -> Any:
    """L2-normalize rows (float32); zero rows stay zero."""
    if sparse.issparse(matrix):
        csr = sparse.csr_matrix(matrix, dtype=np.float32)
        norms = np.sqrt(np.asarray(csr.multiply(csr).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sparse.csr_matrix(sparse.diags(scale.astype(np.float32)) @ csr)
    dense = np.asarray(matrix, dtype=np.float32)
    if dense.ndim != 2:
        raise ValueError(f"vectors must be a 2-d array, got shape {dense.shape}")
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    out: NDArray[np.float32] = np.divide(
        dense, norms, out=np.zeros_like(dense), where=norms > 0
    ).astype(np.float32)
    return out


def _row_norms(matrix: Any) -> NDArray[np.float64]:
    if sparse.issparse(matrix):
        sq = np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel()
    else:
        sq = np.einsum("ij,ij->i", matrix, matrix)
    out: NDArray[np.float64] = np.sqrt(sq.astype(np.float64))
    return out


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
    for start in range(0, n, _CHUNK):
        sims = np.asarray(x[start : start + _CHUNK] @ ct)
        top = np.argmax(sims, axis=1)
        labels[start : start + _CHUNK] = top
        best[start : start + _CHUNK] = np.take_along_axis(sims, top[:, None], axis=1).ravel()
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
    out: NDArray[np.float32] = _normalize_rows(dense)
    return out


def _spherical_kmeans(x: Any, weights: NDArray[np.float32], k: int, seed: int) -> NDArray[np.int64]:
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
    matrix = _normalize_rows(matrix)
    empty_rows = _row_norms(matrix) < 1e-6
    live = np.flatnonzero(~empty_rows)
    row_cluster = np.zeros(len(uniq), dtype=np.int64)
    if live.size:
        kk = min(k, int(live.size))
        row_cluster[live] = _spherical_kmeans(matrix[live], mult[live], kk, seed)
    assignment, sizes, untagged = _renumber(row_cluster[row_of], empty_rows[row_of])
    labels = _tag_labels(assignment, len(sizes), sets, untagged)
    return ClusterResult(assignment, labels, sizes, untagged, _Points(matrix, row_of))


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
    x = _normalize_rows(vectors)
    n = x.shape[0]
    uniq, inverse = np.unique(x, axis=0, return_inverse=True)
    row_of = np.asarray(inverse, dtype=np.int64).ravel()
    mult = np.bincount(row_of, minlength=len(uniq)).astype(np.float32)
    empty_rows = _row_norms(uniq) < 1e-6
    live = np.flatnonzero(~empty_rows)
    row_cluster = np.zeros(len(uniq), dtype=np.int64)
    if live.size:
        row_cluster[live] = _spherical_kmeans(uniq[live], mult[live], min(k, live.size), seed)
    assignment, sizes, untagged = _renumber(row_cluster[row_of], empty_rows[row_of])
    if tags is not None:
        if len(tags) != n:
            raise ValueError(f"{len(tags)} tag sets for {n} vectors")
        labels = _tag_labels(assignment, len(sizes), tags, untagged)
    else:
        labels = [UNTAGGED if c == untagged else f"cluster {c}" for c in range(len(sizes))]
    return ClusterResult(assignment, labels, sizes, untagged, _Points(uniq, row_of))


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
        points: _Points | None = _Points(_normalize_rows(vectors), np.arange(n, dtype=np.int64))
    else:
        points = result.points
    if points is None:
        rng = np.random.default_rng(seed)
        score = rng.random(n)
    else:
        score = _medoid_scores(points, assignment, k)
    score = np.round(score, _DECIMALS)
    order = np.lexsort((np.arange(n), -score, assignment))
    refs = [-1] * k
    for i in order.tolist():
        c = int(assignment[i])
        if refs[c] < 0:
            refs[c] = i
    return refs


def _medoid_scores(points: _Points, assignment: NDArray[np.int64], k: int) -> NDArray[np.float64]:
    """Each item's cosine with its cluster's mean direction."""
    x, row_of = points.matrix, points.row_of
    n = len(assignment)
    member = sparse.csr_matrix(
        (np.ones(n, dtype=np.float32), (assignment, row_of)),
        shape=(k, x.shape[0]),
        dtype=np.float32,
    )
    sums = member @ x
    centroid = _normalize_rows(sums.toarray() if sparse.issparse(sums) else np.asarray(sums))
    if sparse.issparse(x):
        item = sparse.csr_matrix(x[row_of])
        rows = np.repeat(np.arange(n), np.diff(item.indptr))
        vals = item.data.astype(np.float64) * centroid[assignment[rows], item.indices]
        out = np.asarray(np.bincount(rows, weights=vals, minlength=n), dtype=np.float64)
        return out
    score = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        score[part] = np.einsum("ij,ij->i", x[row_of[part]], centroid[assignment[part]])
    return score


# ---- quotas and comparison planning ----


def _apportion(weights: Sequence[float], caps: Sequence[int], total: int) -> list[int]:
    """Split ``total`` units in proportion to ``weights``, none above its cap.

    Largest remainder (ties: lower index); a capped share's surplus is split among the rest by
    the same rule until nothing more is capped (water-filling). Entries with weight or cap 0
    get nothing; the result sums to min(total, sum of the caps of positive-weight entries).
    """
    w = np.asarray(weights, dtype=np.float64)
    cap = np.asarray(caps, dtype=np.int64)
    out = np.zeros(len(w), dtype=np.int64)
    active = (cap > 0) & (w > 0)
    remaining = min(int(total), int(cap[active].sum()))
    while remaining > 0 and active.any():
        idx = np.flatnonzero(active)
        ideal = remaining * (w[idx] / w[idx].sum())
        full = ideal >= cap[idx]
        if full.any():
            hit = idx[full]
            out[hit] = cap[hit]
            remaining -= int(cap[hit].sum())
            active[hit] = False
            continue
        floors = np.floor(ideal).astype(np.int64)
        out[idx] = floors
        left = remaining - int(floors.sum())
        order = idx[np.lexsort((idx, -(ideal - floors)))]
        pos = 0
        while left > 0 and pos < 2 * len(order):
            i = order[pos % len(order)]
            if out[i] < cap[i]:
                out[i] += 1
                left -= 1
            pos += 1
        break
    return [int(v) for v in out]


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
    return _apportion(weights, caps, total)


def plan_comparisons(
    result: ClusterResult,
    refs: Sequence[int],
    quotas_by_cluster: Sequence[int] | Mapping[int, int],
    calls_budget: int,
    priors: Sequence[float | None],
    seed: int,
) -> list[int]:
    """Which items to compare with their cluster's reference (2 judge calls each: both orders).

    ``calls_budget`` 0 compares every item but the references. Otherwise at most
    ``calls_budget // 2`` comparisons, shared between clusters in proportion to their quota
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
    ref_set = {r for r in refs if r >= 0}
    members: list[list[int]] = [[] for _ in range(result.k)]
    for i, c in enumerate(result.assignment.tolist()):
        if i not in ref_set:
            members[c].append(i)
    if calls_budget == 0:
        return sorted(i for group in members for i in group)
    shares = _as_list(quotas_by_cluster)
    weights = [float(shares[c]) if c < len(shares) else 0.0 for c in range(result.k)]
    alloc = _apportion(weights, [len(m) for m in members], calls_budget // 2)
    tiebreak = np.random.default_rng(seed).permutation(n)
    chosen: list[int] = []
    for group, take in zip(members, alloc, strict=True):
        if take:
            ranked = sorted(group, key=lambda i: _prior_key(priors[i], int(tiebreak[i])))
            chosen.extend(ranked[:take])
    return sorted(chosen)


def _prior_key(prior: float | None, tie: int) -> tuple[bool, float, int]:
    return (prior is None, -(prior if prior is not None else 0.0), tie)


# ---- selection ----


def _rank(cands: Sequence[Candidate]) -> list[int]:
    """Best first: quality (unscored last), then judge score, then item id, then index."""

    def key(i: int) -> tuple[bool, float, bool, float, str, int]:
        c = cands[i]
        q, j = c.quality, c.judge_score
        return (q is None, -(q or 0.0), j is None, -(j or 0.0), c.item_id, i)

    return sorted(range(len(cands)), key=key)


def _fill(order: Sequence[int], cands: Sequence[Candidate], budget: Budget) -> list[int]:
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


def _tacos(
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


def _deita(
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
            normalized: NDArray[np.floating[Any]] = _normalize_rows(
                np.asarray(embed(rows), dtype=np.float32)
            )
            return normalized
    else:
        x = _normalize_rows(embeddings)
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
    order = _rank(cands)
    quota: dict[int, int] = {}
    taken: dict[int, int] = {}
    if method == "tacos":
        chosen, quota = _tacos(order, cands, budget, rule)
        counts = Counter(max(cands[i].cluster, -1) for i in chosen)
        taken = {cid: counts.get(cid, 0) for cid in quota}
    elif method == "deita":
        if embeddings is None:
            raise ValueError("deita needs one embedding per candidate")
        chosen = _deita(order, cands, budget, embeddings, diversity_threshold)
    elif method == "alpagasus":
        passing = [i for i in order if (q := cands[i].quality) is not None and q >= score_threshold]
        chosen = _fill(passing, cands, budget)
    elif method == "random":
        shuffled = np.random.default_rng(seed).permutation(len(cands)).tolist()
        chosen = _fill(shuffled, cands, budget)
    elif method == "longest":
        by_length = sorted(
            range(len(cands)), key=lambda i: (-len(cands[i].response), cands[i].item_id, i)
        )
        chosen = _fill(by_length, cands, budget)
    elif method == "score":
        chosen = _fill(order, cands, budget)
    else:
        raise ValueError(f"unknown selection method {method!r}; one of {', '.join(METHODS)}")
    tokens = sum(cands[i].tokens for i in chosen)
    return Selected(method, chosen, tokens, quota, taken)


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
        mean_response_chars=(sum(len(c.response) for c in picked) / len(picked) if picked else 0.0),
    )
