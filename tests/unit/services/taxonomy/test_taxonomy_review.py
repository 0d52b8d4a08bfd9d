"""Joint plan cells, replacement seeds and the budget's quotas: exact per cell and per
dimension, reproducible, and new seeds (not retries) for cells that came out short."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from services.taxonomy.plan import plan_job
from services.taxonomy.review import (
    Review,
    budget_quotas,
    record_round,
    round_cells,
    tally,
)
from taxoforge.composition import cell_of, item_index, seed_cell
from taxoforge.v1 import common_pb2 as pb


def _taxonomy(leaves: int) -> pb.Taxonomy:
    root = pb.TaxonomyNode(id="root", title="Root", kind="root", weight=1.0)
    for n in range(leaves):
        root.children.append(pb.TaxonomyNode(id=f"leaf{n}", title=f"Leaf {n}", weight=1.0 + n))
    return pb.Taxonomy(id="tax", version="1", root=root)


def _recipe(count: int, **extra: object) -> pb.Recipe:
    recipe = pb.Recipe(
        count=count,
        seed=11,
        languages=[
            pb.LanguageShare(code="en", share=0.5),
            pb.LanguageShare(code="fr", share=0.25),
            pb.LanguageShare(code="de", share=0.25),
        ],
        difficulties=[pb.Share(name="easy", share=0.5), pb.Share(name="hard", share=0.5)],
    )
    for key, value in extra.items():
        setattr(recipe, key, value)
    return recipe


@pytest.mark.parametrize(("count", "leaves"), [(24, 12), (200, 5), (37, 40), (1000, 9)])
def test_language_x_difficulty_is_exact_in_the_joint_cells(count: int, leaves: int) -> None:
    plan = plan_job(_recipe(count), _taxonomy(leaves), "j")
    seeds = list(plan.seeds)
    joint = Counter((s.language, s.difficulty) for s in seeds)
    # 0.5/0.25/0.25 x 0.5/0.5 of the count, each within one seed of its share, totals exact.
    assert sum(joint.values()) == count
    for (lang, level), n in joint.items():
        share = {"en": 0.5, "fr": 0.25, "de": 0.25}[lang] * 0.5 * count
        assert abs(n - share) < 1, (lang, level, n, share)
    cells, seed_cells = plan.seeds.cells()
    assert sum(c.planned for c in cells) == count
    for n, seed in enumerate(seeds):
        assert cell_of(cells[int(seed_cells[n])]) == seed_cell(seed)
    assert Counter(seed_cell(s) for s in seeds) == {cell_of(c): c.planned for c in cells}


def test_the_budget_keeps_the_plans_language_shares_in_joint_cells() -> None:
    review = Review.of(_recipe(24), _taxonomy(12), "j", None)
    quotas = budget_quotas(review.cells, 12)
    assert sum(quotas) == 12
    by_lang: Counter[str] = Counter()
    by_level: Counter[str] = Counter()
    for cell, quota in zip(review.cells, quotas, strict=True):
        assert 0 <= quota <= cell.planned
        by_lang[cell.language] += quota
        by_level[cell.difficulty] += quota
    assert by_lang == {"en": 6, "fr": 3, "de": 3}
    assert by_level == {"easy": 6, "hard": 6}
    assert budget_quotas(review.cells, 0) == [c.planned for c in review.cells]
    assert budget_quotas(review.cells, 99) == [c.planned for c in review.cells]


def test_replacements_are_new_seeds_of_their_cells_numbered_after_the_plan() -> None:
    review = Review.of(_recipe(40), _taxonomy(4), "j", None)
    asks = [0] * len(review.cells)
    asks[0], asks[-1] = 3, 2
    record = record_round(review.cells, asks, 40)
    seeds = list(
        review.plan.seeds.replacements(
            review.seed_cells, [int(a) for a in asks], int(record.planned)
        )
    )
    assert [s.item_id for s in seeds] == [f"i{n:07d}" for n in range(40, 45)]
    assert [seed_cell(s) for s in seeds] == [cell_of(review.cells[0])] * 3 + [
        cell_of(review.cells[-1])
    ] * 2
    assert len({s.index for s in seeds}) == 5 and min(s.index for s in seeds) == 40
    # Where each replacement belongs is known from the recorded round alone.
    extra = round_cells([record], review.cells)
    assert extra == {40: 0, 41: 0, 42: 0, 43: len(asks) - 1, 44: len(asks) - 1}
    assert item_index("i0000042") == 42 and item_index("golden3") == -1


def test_the_tally_counts_deliveries_and_reasons_per_cell_and_ignores_unplanned_items() -> None:
    review = Review.of(_recipe(8), _taxonomy(2), "j", None)
    targets = [c.planned for c in review.cells]
    first = int(review.seed_cells[0])
    same = [n for n in range(8) if int(review.seed_cells[n]) == first]
    outcomes = [pb.ItemOutcome(item_id=f"i{same[0]:07d}", judged=True, sft=True, preference=True)]
    outcomes.append(pb.ItemOutcome(item_id="i0000999", judged=True, sft=True))  # not planned
    if len(same) > 1:
        outcomes.append(pb.ItemOutcome(item_id=f"i{same[1]:07d}", failed_stage="instruct"))
    gates = {f"i{same[1]:07d}": ["echo", "echo", "not_a_request"]} if len(same) > 1 else {}
    cells = tally(review, targets, {}, 8, outcomes, gates, promised=True)
    cell = cells[first]
    assert (cell.sft, cell.preference) == (1, 1)
    assert cell.tried == min(2, len(same))
    if len(same) > 1:
        assert cell.reasons == {"failed:instruct": 1, "gate:echo": 1, "gate:not_a_request": 1}
    assert sum(c.tried for c in cells) == cell.tried
    assert np.all(review.seed_cells >= 0)
