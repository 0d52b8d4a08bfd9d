"""A generation job's datasets in its plan's shape: each plan cell keeps exactly its quota.

The review (taxonomy service) writes the job's composition: every cell's quota (its plan
target, or its share of a record budget) and what generation delivered. Selection ranks a
cell's candidates by the job's method (its chosen records first, in its order, then the rest
best first) and keeps the first ``quota`` of them, records with a preference pair first when
the job promises preference data, so both datasets fill where the candidates allow. The
composition is then counted from what was kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from services.selector.choice import export_order
from services.selector.examples import Candidate
from taxoforge.composition import cell_of, item_index
from taxoforge.v1 import common_pb2 as pb

__all__ = ["REMOVED_AT_SELECTION", "count_delivered", "fit_cells", "item_cell", "quotas_of"]

# A cell's reason for records generation delivered and the selection steps removed.
REMOVED_AT_SELECTION = "selection:duplicate_or_contaminated"


def quotas_of(composition: pb.Composition) -> dict[str, int]:
    """Cell key -> the records the datasets should hold."""
    return {cell_of(c): int(c.planned) for c in composition.cells}


def fit_cells(
    chosen: Sequence[int],
    cands: Sequence[Candidate],
    quotas: dict[str, int],
    promised: bool,
) -> tuple[list[int], dict[int, str]]:
    """The records kept per cell, and why each other candidate was left out.

    A candidate whose cell is not in the plan is left out (it cannot happen for a job's own
    items; an old job without a composition is not fitted at all).
    """
    picked = set(chosen)
    rest = export_order((i for i in range(len(cands)) if i not in picked), cands)
    ranked = [*chosen, *rest]
    if promised:  # stable: within each group the method's order holds
        ranked.sort(key=lambda i: not cands[i].has_preference)
    taken: Counter[str] = Counter()
    kept: list[int] = []
    left: dict[int, str] = {}
    for i in ranked:
        cell = cands[i].cell
        quota = quotas.get(cell)
        if quota is None:
            left[i] = "not in the plan's cells"
        elif taken[cell] < quota:
            taken[cell] += 1
            kept.append(i)
        else:
            left[i] = f"its plan cell is full ({quota} records)"
    return kept, left


def count_delivered(
    composition: pb.Composition,
    kept: Sequence[int],
    cands: Sequence[Candidate],
) -> None:
    """Fill ``composition`` with what the datasets hold: SFT records and preference pairs
    per cell, the totals, and whether any cell is short.

    The review counted what generation delivered; records the selection steps then removed
    (duplicates, near duplicates, contamination: each listed in ``meta/dropped.jsonl``) leave
    their cell short after the review, so that shortfall is named among the cell's reasons.
    """
    sft: Counter[str] = Counter(cands[i].cell for i in kept)
    pairs: Counter[str] = Counter(cands[i].cell for i in kept if cands[i].has_preference)
    promised = composition.preference_promised
    for cell in composition.cells:
        key = cell_of(cell)
        removed = min(cell.sft, cell.planned) - sft[key]
        if removed > 0:
            cell.reasons[REMOVED_AT_SELECTION] = removed
        cell.sft = sft[key]
        cell.preference = pairs[key] if promised else 0
    composition.sft = sum(c.sft for c in composition.cells)
    composition.preference = sum(c.preference for c in composition.cells)
    composition.short = any(
        c.sft < c.planned or (promised and c.preference < c.planned) for c in composition.cells
    )


def item_cell(composition: pb.Composition | None, item_id: str) -> dict[str, str]:
    """The plan cell a generation item was made for, as a ``dropped.jsonl`` line names it
    (node as its path, as exports name it, node_id, language, and difficulty and task type
    when the recipe controls them); empty
    for an imported row, an item beyond the plan, or a job reviewed before cells were kept."""
    index = item_index(item_id)
    if composition is None or not 0 <= index < len(composition.item_cells):
        return {}
    c = composition.item_cells[index]
    if not 0 <= c < len(composition.cells):
        return {}
    cell = composition.cells[c]
    named = {
        "node": cell.node_path,
        "node_id": cell.node_id,
        "language": cell.language,
        "difficulty": cell.difficulty,
        "task_type": cell.task_type,
    }
    return {k: v for k, v in named.items() if v}
