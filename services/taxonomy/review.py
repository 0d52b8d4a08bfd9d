"""A generation job's review: once every planned item has ended, each plan cell's deliveries
are counted, and short cells get replacement seeds (a top-up round) or the job goes on to
selection with its composition (plan against delivery, and why each short cell is short).

Each round is decided once: its replacement seeds are recorded (``round-<r>.pb``) before the
job's planned count moves (a compare-and-set on the job's round), and a redelivered review
publishes the same seeds again under the same message ids. A cell's items are known by their
index: the plan's own seeds first, then each round's replacements in the order recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.taxonomy.plan import Plan, controlled_rounding, plan_job
from taxoforge.apportion import capped_largest_remainder, largest_remainder
from taxoforge.composition import CellTally, cell_of, item_index
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "MAX_ROUNDS",
    "Review",
    "budget_quotas",
    "composition_of",
    "record_round",
    "round_cells",
    "tally",
]

# Top-up rounds at most: a cell that still fails after this many rounds is reported short.
MAX_ROUNDS = 12


def record_round(cells: Sequence[pb.CellCount], asks: Sequence[int], start: int) -> pb.Composition:
    """A round's replacement seeds: for each cell asked, how many (``candidates``), in order;
    ``planned`` holds the first new item's index."""
    out = pb.Composition(planned=start)
    for cell, ask in zip(cells, asks, strict=True):
        if ask:
            added = out.cells.add()
            added.CopyFrom(cell)
            added.planned, added.candidates = 0, ask
    return out


def round_cells(rounds: Sequence[pb.Composition], cells: Sequence[pb.CellCount]) -> dict[int, int]:
    """Item index -> cell index for every replacement seed of ``rounds``."""
    position = {cell_of(c): i for i, c in enumerate(cells)}
    out: dict[int, int] = {}
    for record in rounds:
        n = int(record.planned)
        for cell in record.cells:
            c = position[cell_of(cell)]
            for _ in range(cell.candidates):
                out[n] = c
                n += 1
    return out


@dataclass
class Review:
    """A job's plan as its review sees it: cells, the plan's own seeds' cells, targets."""

    plan: Plan
    cells: list[pb.CellCount]
    seed_cells: npt.NDArray[np.int64]

    @classmethod
    def of(
        cls, recipe: pb.Recipe, taxonomy: pb.Taxonomy, job_id: str, tasks: pb.Taxonomy | None
    ) -> Review:
        plan = plan_job(recipe, taxonomy, job_id, tasks)
        cells, seed_cells = plan.seeds.cells()
        return cls(plan, cells, seed_cells)

    def cell_at(self, index: int, extra: dict[int, int]) -> int:
        """The cell of item ``index`` (-1 when the item is not the job's)."""
        if 0 <= index < len(self.seed_cells):
            return int(self.seed_cells[index])
        return extra.get(index, -1)


def tally(
    review: Review,
    targets: Sequence[int],
    extra: dict[int, int],
    planned: int,
    outcomes: Sequence[pb.ItemOutcome],
    gates: dict[str, list[str]],
    promised: bool,
) -> list[CellTally]:
    """Each cell's target, items tried, deliveries, and why the others did not deliver.

    Only items below ``planned`` count: a round's seeds published before a crash and before
    the job's count moved are counted once the round stands, never twice.
    """
    out = [CellTally(target=int(t)) for t in targets]
    for outcome in outcomes:
        index = item_index(outcome.item_id)
        c = review.cell_at(index, extra) if 0 <= index < planned else -1
        if c < 0:
            continue
        cell = out[c]
        cell.tried += 1
        reasons: list[str] = []
        if outcome.judged:
            cell.sft += outcome.sft
            cell.preference += outcome.preference
            if not outcome.sft:
                reasons.append("unusable")
            elif promised and not outcome.preference:
                reasons.append("no_pair")
        else:
            reasons.append(f"failed:{outcome.failed_stage or 'unknown'}")
            reasons.extend(f"gate:{g}" for g in sorted(set(gates.get(outcome.item_id, []))))
        for reason in reasons:
            cell.reasons[reason] = cell.reasons.get(reason, 0) + 1
    return out


def budget_quotas(cells: Sequence[pb.CellCount], budget: int) -> list[int]:
    """Each cell's share of a record ``budget`` smaller than the plan, with the plan's shape.

    Language and difficulty totals are apportioned as the plan apportions them (largest
    remainder, then controlled rounding of the language x difficulty table, so both totals are
    exact); each language x difficulty group's share is then split over its cells (nodes, task
    types) in proportion to their targets, none above its target.
    """
    targets = [int(c.planned) for c in cells]
    if budget <= 0 or budget >= sum(targets):
        return targets
    languages = sorted({c.language for c in cells}, key=[c.language for c in cells].index)
    levels = sorted({c.difficulty for c in cells}, key=[c.difficulty for c in cells].index)
    by_language = [
        sum(t for c, t in zip(cells, targets, strict=True) if c.language == lang)
        for lang in languages
    ]
    by_level = [
        sum(t for c, t in zip(cells, targets, strict=True) if c.difficulty == level)
        for level in levels
    ]
    table = controlled_rounding(
        largest_remainder([float(n) for n in by_language], budget),
        largest_remainder([float(n) for n in by_level], budget),
    )
    quotas = [0] * len(cells)
    spare = 0
    for i, lang in enumerate(languages):
        for j, level in enumerate(levels):
            members = [
                k for k, c in enumerate(cells) if c.language == lang and c.difficulty == level
            ]
            caps = [targets[k] for k in members]
            shares = capped_largest_remainder([float(t) for t in caps], caps, table[i][j])
            for k, share in zip(members, shares, strict=True):
                quotas[k] = share
            spare += table[i][j] - sum(shares)
    if spare > 0:  # a group asked more than its cells hold (rare): the rest by target
        room = [t - q for q, t in zip(quotas, targets, strict=True)]
        extra = capped_largest_remainder([float(t) for t in targets], room, spare)
        quotas = [q + e for q, e in zip(quotas, extra, strict=True)]
    return quotas


def composition_of(
    review: Review,
    tallies: Sequence[CellTally],
    promised: bool,
    job: pb.Job,
    max_candidates: int,
    stopped: str,
    extra: dict[int, int] | None = None,
) -> pb.Composition:
    """The plan against what generation delivered, cell by cell (the selector counts the
    datasets' records into it once it has chosen them), with each planned item's cell
    (``extra``: the replacement seeds' cells, as ``round_cells`` gives them)."""
    out = pb.Composition(
        preference_promised=promised,
        max_candidates=max_candidates,
        candidates=job.planned,
        rounds=job.rounds,
        stopped=stopped,
    )
    for cell, counted in zip(review.cells, tallies, strict=True):
        quota = counted.target
        added = out.cells.add()
        added.CopyFrom(cell)
        added.planned = quota
        added.candidates = counted.tried
        added.sft = min(counted.sft, quota)
        added.preference = min(counted.preference, quota) if promised else 0
        for reason, n in sorted(counted.reasons.items()):
            added.reasons[reason] = n
    out.item_cells.extend(review.cell_at(i, extra or {}) for i in range(int(job.planned)))
    out.planned = sum(c.planned for c in out.cells)
    out.sft = sum(c.sft for c in out.cells)
    out.preference = sum(c.preference for c in out.cells)
    out.short = any(c.sft < c.planned or (promised and c.preference < c.planned) for c in out.cells)
    return out
