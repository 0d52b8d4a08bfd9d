"""A generation job's composition: its plan cells, what each delivers, and how short cells are
topped up.

A cell is one joint value of the dimensions a recipe controls (taxonomy leaf, language,
difficulty, task type; a dimension the recipe does not ask for is empty). The plan gives each
cell a target; the job is done when every cell delivers its target, as an SFT record and, when
the job's exports promise preference data, as a preference pair with at least ``min_margin``.
An item that fails or falls short leaves its cell short, and the taxonomy service plans
replacement seeds for that cell (``top_up``) until the cell is full or the job's candidate
budget is spent. Selection then keeps exactly each cell's target (or its share of a record
budget), so a cell never delivers more than it asked for.

Pure functions over plain values: the taxonomy service (plan, review) and the selector (quotas,
report) share them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from taxoforge.apportion import capped_largest_remainder
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "COMPOSITION_OBJECT",
    "DEFAULT_MAX_CANDIDATES",
    "PREFERENCE_EXPORTS",
    "CellTally",
    "candidate_budget",
    "cell_key",
    "cell_of",
    "delivers",
    "item_index",
    "max_candidates",
    "preference_promised",
    "seed_cell",
    "top_up",
]

# The work object a generation job's review writes its composition to (the selector reads it).
COMPOSITION_OBJECT = "composition.pb"
# Items a job may generate, as a factor of its count, when the recipe does not say.
DEFAULT_MAX_CANDIDATES = 2.0
# A cell's success rate is never assumed lower than this when sizing its replacements, so one
# bad round does not spend the whole budget on a cell that may never fill.
_MIN_RATE = 0.25
# Export formats that carry preference pairs (taxoforge.selection.EXPORT_FORMATS).
PREFERENCE_EXPORTS = frozenset({"preference", "openai-dpo"})


def cell_key(node_id: str, language: str, difficulty: str = "", task_type: str = "") -> str:
    """The cell's key: its dimensions' values joined by tabs (no value holds a tab)."""
    return "\t".join((node_id, language, difficulty, task_type))


def seed_cell(seed: pb.Seed) -> str:
    """The cell a seed belongs to."""
    return cell_key(seed.node_id, seed.language, seed.difficulty, seed.task_type)


def cell_of(cell: pb.CellCount) -> str:
    """A ``CellCount``'s key."""
    return cell_key(cell.node_id, cell.language, cell.difficulty, cell.task_type)


def delivers(judgment: pb.Judgment) -> tuple[bool, bool]:
    """(SFT record, preference pair): what a judged item can give the datasets.

    SFT: the item is usable and a response with a non-empty text has a valid score (or was
    kept by contrastive filtering); preference: usable, and the judge made a pair (it makes
    one only when the margin is met).
    """
    if not judgment.usable:
        return False, False
    texts = {r.id: r.text.strip() for r in judgment.responses}
    scored = any(not s.failed and texts.get(s.response_id) for s in judgment.scores)
    decision = judgment.contrastive
    kept = decision.decision in ("keep_strong", "keep_target") and bool(
        texts.get(decision.strong_id if decision.decision == "keep_strong" else decision.target_id)
    )
    sft = scored or kept
    return sft, sft and judgment.HasField("pair")


def preference_promised(exports: Iterable[str]) -> bool:
    """Whether a job with these export formats (empty: all) promises preference pairs."""
    chosen = set(exports)
    return not chosen or bool(chosen & PREFERENCE_EXPORTS)


def max_candidates(recipe: pb.Recipe) -> float:
    """The recipe's candidate factor (``max_candidates``), or the default."""
    return recipe.max_candidates if recipe.HasField("max_candidates") else DEFAULT_MAX_CANDIDATES


def candidate_budget(recipe: pb.Recipe) -> int:
    """Items the job may generate in all: its count times the candidate factor (at least
    the count itself)."""
    return max(int(recipe.count), math.floor(recipe.count * max_candidates(recipe) + 1e-9))


@dataclass
class CellTally:
    """What one cell has so far: its target, items tried, deliveries and why others failed."""

    target: int
    tried: int = 0
    sft: int = 0
    preference: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def need(self, promised: bool) -> int:
        """Deliveries still missing (the larger of SFT and, when promised, preference)."""
        missing = self.target - self.sft
        if promised:
            missing = max(missing, self.target - self.preference)
        return max(0, missing)

    def rate(self, promised: bool) -> float | None:
        """The share of tried items that delivered what the cell lacks, None before any."""
        if self.tried == 0:
            return None
        got = min(self.sft, self.preference) if promised else self.sft
        return got / self.tried


def top_up(cells: Sequence[CellTally], promised: bool, available: int) -> tuple[list[int], bool]:
    """Replacement seeds per cell for the next round, and whether the budget cut them.

    Each short cell asks for what it lacks divided by its success rate so far (never below
    ``_MIN_RATE``, the job's overall rate for a cell with no history), so a cell that fails
    one item in five needs about one round; when the ``available`` seeds do not cover every
    ask, they are shared in proportion to what each cell lacks (largest remainder), at least
    one seed a short cell while any remain.
    """
    tried = sum(c.tried for c in cells)
    got = sum(min(c.sft, c.preference) if promised else c.sft for c in cells)
    overall = got / tried if tried else 1.0
    asks = []
    for cell in cells:
        need = cell.need(promised)
        if need == 0:
            asks.append(0)
            continue
        rate = cell.rate(promised)
        rate = overall if rate is None else rate
        asks.append(math.ceil(need / max(rate, _MIN_RATE)))
    total = sum(asks)
    if total <= available:
        return asks, False
    if available <= 0:
        return [0] * len(cells), True
    needs = [float(c.need(promised)) for c in cells]
    return capped_largest_remainder(needs, asks, available), True


def item_index(item_id: str) -> int:
    """The planned index of a generation item id (``i0000042`` -> 42); -1 when not one."""
    if not item_id.startswith("i") or not item_id[1:].isdigit():
        return -1
    return int(item_id[1:])
