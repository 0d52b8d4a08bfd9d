"""Plans: a recipe's targets turned into exact, reproducible seeds."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from services.taxonomy.catalog import iter_leaves
from taxoforge.errors import PermanentError
from taxoforge.v1 import common_pb2 as pb
from taxoforge.v1 import taxonomy_pb2 as tpb

__all__ = ["Plan", "controlled_rounding", "item_id", "largest_remainder", "plan_job"]


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


def controlled_rounding(row_totals: Sequence[int], col_totals: Sequence[int]) -> list[list[int]]:
    """An integer table with exactly these row and column sums, each cell the floor or ceiling
    of its proportional share ``row * col / total`` (never rounded up when that is whole).

    The fractional parts form a table whose rows and columns sum to whole numbers, so a 0/1
    table of round-ups with those sums exists (transportation polytopes have integral corners).
    It is filled largest fraction first, and any units left are placed along augmenting paths.
    """
    total = sum(row_totals)
    if total != sum(col_totals):
        raise ValueError("row and column totals differ")
    n_rows, n_cols = len(row_totals), len(col_totals)
    if total == 0:
        return [[0] * n_cols for _ in range(n_rows)]
    exact = [[r * c / total for c in col_totals] for r in row_totals]
    table = [[math.floor(x + 1e-9) for x in row] for row in exact]
    frac = [[exact[i][j] - table[i][j] for j in range(n_cols)] for i in range(n_rows)]
    row_need = [row_totals[i] - sum(table[i]) for i in range(n_rows)]
    col_need = [col_totals[j] - sum(table[i][j] for i in range(n_rows)) for j in range(n_cols)]
    up = [[False] * n_cols for _ in range(n_rows)]
    cells = sorted(
        ((i, j) for i in range(n_rows) for j in range(n_cols) if frac[i][j] > 1e-9),
        key=lambda ij: (-frac[ij[0]][ij[1]], ij),
    )
    for i, j in cells:
        if row_need[i] > 0 and col_need[j] > 0:
            up[i][j] = True
            row_need[i] -= 1
            col_need[j] -= 1
    for j in range(n_cols):
        while col_need[j] > 0:
            if not _augment(j, up, frac, row_need):
                raise RuntimeError("no rounding meets both totals")  # unreachable, see above
            col_need[j] -= 1
    return [[table[i][j] + up[i][j] for j in range(n_cols)] for i in range(n_rows)]


def _augment(
    start: int, up: list[list[bool]], frac: list[list[float]], row_need: list[int]
) -> bool:
    """Give column ``start`` one more round-up, shifting others along an alternating path."""
    n_rows, n_cols = len(up), len(up[0])
    reached_row: dict[int, int] = {}  # row -> the column it was reached from
    reached_col: dict[int, int] = {start: -1}  # column -> the row that gave it up
    queue = [start]
    while queue:
        col = queue.pop(0)
        for row in range(n_rows):
            if row in reached_row or up[row][col] or frac[row][col] <= 1e-9:
                continue
            reached_row[row] = col
            if row_need[row] > 0:
                row_need[row] -= 1
                while True:  # walk back: round up (row, col), release the row's previous one
                    up[row][col] = True
                    if col == start:
                        return True
                    row = reached_col[col]
                    up[row][col] = False
                    col = reached_row[row]
            for other in range(n_cols):
                if up[row][other] and other not in reached_col:
                    reached_col[other] = row
                    queue.append(other)
    return False


class Plan:
    """Seeds for a job, and the count of each (node, language) cell."""

    def __init__(self, seeds: list[pb.Seed], cells: list[tpb.PlanCell]) -> None:
        self.seeds = seeds
        self.cells = cells


def plan_job(recipe: pb.Recipe, taxonomy: pb.Taxonomy, job_id: str) -> Plan:
    """Spread ``recipe.count`` seeds over the taxonomy's leaves and the recipe's languages.

    Each leaf gets its exact share of ``count`` by weight, each language its exact share, and
    each (leaf, language) cell the floor or ceiling of leaf share x language share.
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

    # Exact totals per leaf (by weight) and per language (by share), then a table of cells that
    # meets both: a user asking for 30% German gets exactly 30%, and each leaf its share.
    per_leaf = largest_remainder([leaf.weight for leaf, _ in leaves], recipe.count)
    per_language = largest_remainder([share.share for share in languages], recipe.count)
    table = controlled_rounding(per_leaf, per_language)

    rows: list[tuple[pb.TaxonomyNode, tuple[str, ...], str]] = []
    plan_cells: list[tpb.PlanCell] = []
    for (leaf, path), counts in zip(leaves, table, strict=True):
        for share, n in zip(languages, counts, strict=True):
            if n:
                plan_cells.append(tpb.PlanCell(node_id=leaf.id, language=share.code, count=n))
                rows.extend([(leaf, path, share.code)] * n)
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
