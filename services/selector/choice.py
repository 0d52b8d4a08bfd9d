"""The select step's choice of records, pure: the clusters and comparative scores applied to
the candidates, the job's method and the others measured on them, and why each record was kept
or left out (the step itself moves the job and writes the files)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from services.selector.examples import Candidate, Example
from services.selector.methods.deita import Embeddings
from services.selector.methods.measurement import MethodMeasure, measure
from services.selector.methods.quotas import Rule
from services.selector.methods.ranking import Budget
from services.selector.methods.select import Selected, select
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "Choice",
    "Comparisons",
    "apply_clusters",
    "apply_comparisons",
    "choose",
    "cluster_quotas",
    "explain",
    "export_order",
    "methods_of",
    "not_kept",
    "provenance",
]


@dataclass
class Comparisons:
    """Comparative scores: each compared sample's, and each reference's mean over its pairs."""

    by_item: dict[str, pb.Comparison] = field(default_factory=dict)
    failed: int = 0
    calls: int = 0


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def cluster_quotas(picked: Selected) -> dict[int, tuple[int, int]]:
    """Per cluster: (quota, selected), when the method has quotas (TACOS)."""
    return {
        c: (picked.quota.get(c, 0), picked.taken.get(c, 0))
        for c in set(picked.quota) | set(picked.taken)
    }


def _ranks(
    cands: Sequence[Candidate], key: Callable[[Candidate], int]
) -> dict[int, tuple[int, int]]:
    """Each candidate's rank by quality inside its group, and the group's size."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(cands):
        groups.setdefault(key(c), []).append(i)
    out: dict[int, tuple[int, int]] = {}
    for members in groups.values():
        members.sort(
            key=lambda i: (cands[i].quality is None, -(cands[i].quality or 0.0), cands[i].item_id)
        )
        for rank, i in enumerate(members, 1):
            out[i] = (rank, len(members))
    return out


def explain(
    method: str,
    chosen: Sequence[int],
    cands: Sequence[Candidate],
    labels: Sequence[str],
    quotas: dict[int, tuple[int, int]],
) -> dict[int, str]:
    """Why each chosen record was kept."""
    ranks = _ranks(cands, lambda c: c.cluster)
    out = {}
    for i in chosen:
        c = cands[i]
        rank, size = ranks[i]
        quality = "no score" if c.quality is None else f"quality {c.quality:.1f}"
        if method == "tacos":
            label = labels[c.cluster] if 0 <= c.cluster < len(labels) else "?"
            quota = quotas.get(c.cluster, (0, 0))[0]
            out[i] = (
                f"tacos: {_ordinal(rank)} of {size} in cluster {c.cluster} ({label}), "
                f"quota {quota}; {quality}"
            )
        else:
            out[i] = f"{method}: selected; {quality}"
    return out


def not_kept(
    method: str,
    i: int,
    cands: Sequence[Candidate],
    labels: Sequence[str],
    quotas: dict[int, tuple[int, int]],
) -> str:
    c = cands[i]
    quality = "no score" if c.quality is None else f"quality {c.quality:.1f}"
    if method == "tacos":
        label = labels[c.cluster] if 0 <= c.cluster < len(labels) else "?"
        return (
            f"tacos: below the quota ({quotas.get(c.cluster, (0, 0))[0]}) of cluster "
            f"{c.cluster} ({label}); {quality}"
        )
    return f"{method}: not selected within the budget; {quality}"


def provenance(
    example: Example,
    cand: Candidate,
    label: str,
    references: Sequence[str],
    comparisons: Comparisons,
    kept: str,
) -> dict[str, Any]:
    """Everything a record came from, and why it was kept."""
    record: dict[str, Any] = {
        "id": example["id"],
        "item_id": example["item_id"],
        "shape": example["shape"],
        "kept": kept,
        "quality": cand.quality,
        "judge_score": cand.judge_score,
        "cluster": cand.cluster,
        "cluster_label": label,
        "tags": cand.tags,
        "tokens": cand.tokens,
    }
    for key in ("row", "language", "node", "difficulty", "task_type"):
        if key in example:
            record[key] = example[key]  # type: ignore[literal-required]
    c = comparisons.by_item.get(cand.item_id)
    if c is not None:
        record["comparative"] = {
            "reference_id": c.b_id,
            "score": c.a,
            "reference_score": c.b,
            "sample_first": [c.a_first_a, c.a_first_b],
            "reference_first": [c.b_first_a, c.b_first_b],
            "inconsistent": c.inconsistent,
            "failed": c.failed,
            "rationales": [c.rationale_a_first, c.rationale_b_first],
            "judge_model": c.calls[0].model if c.calls else "",
        }
    elif 0 <= cand.cluster < len(references) and references[cand.cluster] == cand.item_id:
        record["comparative"] = {"reference_of_cluster": cand.cluster, "score": cand.comparative}
    record["metadata"] = example.get("metadata", {})
    return record


def apply_clusters(cands: Sequence[Candidate], plan: Mapping[str, Any]) -> None:
    """clusters.json applied to the candidates: each one's cluster and normalized tags."""
    for cand, cluster, tags in zip(cands, plan["assignment"], plan["tags"], strict=True):
        cand.cluster, cand.tags = int(cluster), list(tags)


def apply_comparisons(
    cands: Sequence[Candidate], comparisons: Iterable[pb.Comparison]
) -> Comparisons:
    """Comparative scores on the candidates: a compared sample gets its score against the
    reference; a reference gets the mean of its scores over its comparisons."""
    out = Comparisons()
    reference_scores: dict[str, list[float]] = {}
    for comparison in comparisons:
        out.by_item[comparison.a_id] = comparison
        out.calls += len(comparison.calls)
        if comparison.failed:
            out.failed += 1
            continue
        reference_scores.setdefault(comparison.b_id, []).append(comparison.b)
    for cand in cands:
        c = out.by_item.get(cand.item_id)
        if c is not None and not c.failed:
            cand.comparative = c.a
        elif cand.item_id in reference_scores:
            scores = reference_scores[cand.item_id]
            cand.comparative = sum(scores) / len(scores)
    return out


@dataclass
class Choice:
    """The job's method's records (best first) with its per-cluster (quota, selected), and
    every method's measure, the job's method first."""

    chosen: list[int]
    quota_by_cluster: dict[int, tuple[int, int]]
    measures: list[MethodMeasure]


def choose(
    spec: pb.SelectionSpec,
    cands: Sequence[Candidate],
    embeddings: Embeddings | None,
    count: Callable[[Sequence[int]], object] | None = None,
) -> Choice:
    """Run the job's method and each method it is compared with on the same candidates.

    ``embeddings`` (DEITA's vectors, or a function giving them) is needed only when DEITA is
    among the methods. ``count`` fills in the token counts of the candidates at the rows it
    is given (those screening left at -1): called once, with every record a method picked,
    before the methods are measured."""
    budget = Budget(int(spec.budget), spec.budget_unit)  # type: ignore[arg-type]
    out = Choice([], {}, [])
    picks: list[tuple[str, Selected]] = []
    for method in methods_of(spec):
        picked = select(
            method,
            cands,
            budget,
            rule=cast(Rule, spec.quota),
            seed=int(spec.seed),
            embeddings=embeddings,
            diversity_threshold=spec.diversity_threshold,
            score_threshold=spec.score_threshold,
        )
        picks.append((method, picked))
    if count is not None:
        count(sorted({i for _, picked in picks for i in picked.chosen}))
    for method, picked in picks:
        out.measures.append(measure(method, picked.chosen, cands))
        if method == spec.method:
            out.chosen = list(picked.chosen)
            out.quota_by_cluster = cluster_quotas(picked)
    return out


def methods_of(spec: pb.SelectionSpec) -> list[str]:
    """The job's method, then the methods it is compared with."""
    return [spec.method, *[m for m in spec.compare if m != spec.method]]


def export_order(chosen: Iterable[int], cands: Sequence[Candidate]) -> list[int]:
    """The order records are exported in: best quality first, unscored last, then item id."""
    return sorted(
        chosen,
        key=lambda i: (cands[i].quality is None, -(cands[i].quality or 0.0), cands[i].item_id),
    )
