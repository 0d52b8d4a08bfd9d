"""Plans: a recipe's targets turned into exact, reproducible seeds."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from services.taxonomy.catalog import iter_leaves
from taxoforge.errors import PermanentError
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb

__all__ = ["Plan", "item_id", "largest_remainder", "plan_job"]


def item_id(index: int) -> str:
    """The id of the item planned at ``index`` (stable, sortable)."""
    return f"i{index:07d}"


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


class Plan:
    """Seeds for a job, and the count of each (node, language) cell."""

    def __init__(self, seeds: list[pb.Seed], cells: list[tpb.PlanCell]) -> None:
        self.seeds = seeds
        self.cells = cells


def plan_job(recipe: pb.Recipe, taxonomy: pb.Taxonomy, job_id: str) -> Plan:
    """Spread ``recipe.count`` seeds over the taxonomy's leaves and the recipe's languages.

    Cells are (leaf, language) with weight leaf.weight * language.share; counts are exact.
    Seeds are shuffled with ``recipe.seed`` so any prefix of the job covers many cells.

    Raises:
        PermanentError: the recipe cannot be planned (and says why).
    """
    if recipe.count < 1:
        raise PermanentError("count must be at least 1")
    leaves = list(iter_leaves(taxonomy.root))
    if not leaves:
        raise PermanentError(f"taxonomy {taxonomy.id!r} has no leaves to plan seeds on")
    languages = list(recipe.languages) or [pb.LanguageShare(code="en", share=1.0)]
    bad = [s.code for s in languages if not (math.isfinite(s.share) and s.share > 0)]
    if bad:
        raise PermanentError(f"language shares must be > 0; check {', '.join(bad)}")
    share_sum = sum(share.share for share in languages)
    if abs(share_sum - 1.0) > 1e-6:
        raise PermanentError(f"language shares sum to {share_sum:g}; they must sum to 1")

    cells: list[tuple[pb.TaxonomyNode, tuple[str, ...], str]] = []
    weights: list[float] = []
    for leaf, path in leaves:
        for share in languages:
            cells.append((leaf, path, share.code))
            weights.append(leaf.weight * share.share)
    counts = largest_remainder(weights, recipe.count)

    rows: list[tuple[pb.TaxonomyNode, tuple[str, ...], str]] = []
    plan_cells: list[tpb.PlanCell] = []
    for (leaf, path, lang), n in zip(cells, counts, strict=True):
        if n:
            plan_cells.append(tpb.PlanCell(node_id=leaf.id, language=lang, count=n))
            rows.extend([(leaf, path, lang)] * n)
    random.Random(recipe.seed).shuffle(rows)
    seeds = [
        pb.Seed(
            job_id=job_id,
            item_id=item_id(index),
            index=index,
            node_id=leaf.id,
            node_path=" > ".join(path),
            node_title=leaf.title,
            node_description=leaf.description,
            language=lang,
        )
        for index, (leaf, path, lang) in enumerate(rows)
    ]
    return Plan(seeds, plan_cells)
