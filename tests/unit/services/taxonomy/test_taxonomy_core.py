"""Plans: exact integer splits and reproducible seeds."""

from __future__ import annotations

from collections import Counter

import pytest

from services.taxonomy.core import item_id, largest_remainder, plan_job
from taxoforge.errors import PermanentError
from taxoforge.v1 import common_pb2 as pb


def _taxonomy(**leaf_weights: float) -> pb.Taxonomy:
    """A two-level taxonomy: one field per leaf weight, named after the leaf."""
    root = pb.TaxonomyNode(id="root", title="Root", kind="root", weight=1.0)
    for leaf_id, weight in leaf_weights.items():
        field = pb.TaxonomyNode(id=f"{leaf_id}-field", title=f"{leaf_id.title()} Field", weight=1)
        field.children.append(
            pb.TaxonomyNode(
                id=leaf_id, title=leaf_id.title(), description=f"about {leaf_id}", weight=weight
            )
        )
        root.children.append(field)
    return pb.Taxonomy(id="tax", version="1", root=root)


def _recipe(count: int, seed: int = 7, **shares: float) -> pb.Recipe:
    return pb.Recipe(
        count=count,
        seed=seed,
        languages=[pb.LanguageShare(code=code, share=share) for code, share in shares.items()],
    )


# ---- largest_remainder ----


@pytest.mark.parametrize(
    ("weights", "total"),
    [([1, 1, 1], 10), ([0.2, 0.3, 0.5], 7), ([3, 1], 1), ([1] * 7, 100), ([0.1, 5, 2.5], 999)],
)
def test_largest_remainder_sums_exactly(weights: list[float], total: int) -> None:
    counts = largest_remainder(weights, total)

    assert sum(counts) == total
    assert len(counts) == len(weights)
    assert all(c >= 0 for c in counts)


def test_largest_remainder_is_proportional() -> None:
    assert largest_remainder([1, 3], 8) == [2, 6]
    assert largest_remainder([0.5, 0.25, 0.25], 4) == [2, 1, 1]
    # every count is within one of its exact quota
    weights, total = [0.13, 0.29, 0.58], 57
    for count, weight in zip(largest_remainder(weights, total), weights, strict=True):
        assert abs(count - weight * total) < 1


def test_largest_remainder_gives_leftovers_to_largest_fractions() -> None:
    # quotas 1.6, 2.4, 1.0 → floors 1, 2, 1; the one left unit goes to the .6
    assert largest_remainder([1.6, 2.4, 1.0], 5) == [2, 2, 1]


def test_largest_remainder_breaks_ties_towards_earlier_shares() -> None:
    assert largest_remainder([1, 1, 1], 1) == [1, 0, 0]
    assert largest_remainder([1, 1, 1], 2) == [1, 1, 0]
    assert largest_remainder([1, 1, 1, 1], 6) == [2, 2, 1, 1]


def test_largest_remainder_of_zero_is_all_zeros() -> None:
    assert largest_remainder([1, 2, 3], 0) == [0, 0, 0]


def test_largest_remainder_rejects_negative_total() -> None:
    with pytest.raises(ValueError, match="total must be >= 0"):
        largest_remainder([1, 1], -1)


@pytest.mark.parametrize("weights", [[], [0, 0], [0.0]])
def test_largest_remainder_needs_positive_weight(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights must contain a positive value"):
        largest_remainder(weights, 3)


# ---- plan_job ----


def test_item_id_is_zero_padded_and_sortable() -> None:
    assert item_id(0) == "i0000000"
    assert item_id(42) == "i0000042"
    assert sorted([item_id(10), item_id(9), item_id(100)]) == [
        item_id(9),
        item_id(10),
        item_id(100),
    ]


def test_plan_makes_exactly_count_seeds() -> None:
    plan = plan_job(_recipe(37, en=0.5, fr=0.3, de=0.2), _taxonomy(a=1, b=2, c=0.5), "job-1")

    assert len(plan.seeds) == 37
    assert sum(cell.count for cell in plan.cells) == 37


def test_plan_cell_counts_follow_leaf_weights_times_language_shares() -> None:
    plan = plan_job(_recipe(16, en=0.75, fr=0.25), _taxonomy(a=1, b=3), "job-1")

    cells = {(c.node_id, c.language): c.count for c in plan.cells}
    assert cells == {("a", "en"): 3, ("a", "fr"): 1, ("b", "en"): 9, ("b", "fr"): 3}
    # the seeds themselves carry the same distribution
    assert Counter((s.node_id, s.language) for s in plan.seeds) == cells


def test_plan_leaves_out_empty_cells() -> None:
    plan = plan_job(_recipe(1, en=1.0), _taxonomy(a=1, b=1), "job-1")

    assert [(c.node_id, c.language, c.count) for c in plan.cells] == [("a", "en", 1)]


def test_plan_defaults_to_english() -> None:
    plan = plan_job(_recipe(4), _taxonomy(a=1), "job-1")

    assert {s.language for s in plan.seeds} == {"en"}
    assert [(c.node_id, c.language, c.count) for c in plan.cells] == [("a", "en", 4)]


def test_plan_seeds_describe_their_leaf() -> None:
    plan = plan_job(_recipe(3, en=1.0), _taxonomy(physics=1), "job-9")

    seed = plan.seeds[0]
    assert seed.job_id == "job-9"
    assert seed.node_id == "physics"
    assert seed.node_title == "Physics"
    assert seed.node_description == "about physics"
    assert seed.node_path == "Physics Field > Physics"


def test_plan_item_ids_are_unique_and_follow_the_index() -> None:
    plan = plan_job(_recipe(25, en=0.5, fr=0.5), _taxonomy(a=1, b=1, c=1), "job-1")

    assert [s.index for s in plan.seeds] == list(range(25))
    assert [s.item_id for s in plan.seeds] == [item_id(i) for i in range(25)]
    ids = [s.item_id for s in plan.seeds]
    assert len(set(ids)) == 25
    assert ids == sorted(ids)


def _order(plan_seeds: list[pb.Seed]) -> list[tuple[str, str]]:
    return [(s.node_id, s.language) for s in plan_seeds]


def test_plan_is_reproducible_with_the_same_seed() -> None:
    tax = _taxonomy(a=1, b=2, c=3)
    first = plan_job(_recipe(40, seed=123, en=0.5, fr=0.5), tax, "job-1")
    second = plan_job(_recipe(40, seed=123, en=0.5, fr=0.5), tax, "job-1")

    assert list(first.seeds) == list(second.seeds)
    assert list(first.cells) == list(second.cells)


def test_plan_order_changes_with_another_seed() -> None:
    tax = _taxonomy(a=1, b=2, c=3)
    one = plan_job(_recipe(40, seed=1, en=0.5, fr=0.5), tax, "job-1")
    other = plan_job(_recipe(40, seed=2, en=0.5, fr=0.5), tax, "job-1")

    assert _order(one.seeds) != _order(other.seeds)
    # only the order differs: the cells are the same
    assert Counter(_order(one.seeds)) == Counter(_order(other.seeds))
    assert list(one.cells) == list(other.cells)


def test_plan_shuffles_so_a_prefix_covers_many_cells() -> None:
    plan = plan_job(_recipe(60, seed=5, en=0.5, fr=0.5), _taxonomy(a=1, b=1, c=1), "job-1")

    assert len(set(_order(plan.seeds[:12]))) > 2


@pytest.mark.parametrize("count", [0, -3])
def test_plan_rejects_count_below_one(count: int) -> None:
    with pytest.raises(PermanentError, match="count must be at least 1"):
        plan_job(_recipe(count, en=1.0), _taxonomy(a=1), "job-1")


def test_plan_rejects_shares_not_summing_to_one() -> None:
    with pytest.raises(PermanentError, match=r"language shares sum to 0\.9; they must sum to 1"):
        plan_job(_recipe(5, en=0.5, fr=0.4), _taxonomy(a=1), "job-1")


def test_plan_rejects_a_taxonomy_without_leaves() -> None:
    empty = pb.Taxonomy(id="bare", root=pb.TaxonomyNode(id="bare", title="Bare"))

    with pytest.raises(PermanentError, match="taxonomy 'bare' has no leaves"):
        plan_job(_recipe(5, en=1.0), empty, "job-1")


def test_plan_rejects_negative_language_share() -> None:
    with pytest.raises(PermanentError):
        plan_job(_recipe(10, en=1.5, fr=-0.5), _taxonomy(a=1, b=1), "job-1")


# ---- controlled_rounding: exact marginals in two dimensions ----


def test_controlled_rounding_meets_both_marginals_on_random_tables() -> None:
    import math
    import random

    from services.taxonomy.core import controlled_rounding

    rng = random.Random(5)
    for _ in range(300):
        rows = [rng.randint(0, 40) for _ in range(rng.randint(1, 12))]
        total = sum(rows)
        shares = [rng.random() + 0.01 for _ in range(rng.randint(1, 5))]
        cols = largest_remainder(shares, total) if total else [0] * len(shares)
        table = controlled_rounding(rows, cols)
        assert [sum(r) for r in table] == rows
        assert [sum(table[i][j] for i in range(len(rows))) for j in range(len(cols))] == cols
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                exact = r * c / total if total else 0
                assert math.floor(exact) <= table[i][j] <= math.ceil(exact)


def test_controlled_rounding_refuses_mismatched_totals() -> None:
    from services.taxonomy.core import controlled_rounding

    with pytest.raises(ValueError, match="differ"):
        controlled_rounding([3, 2], [4])


def test_language_and_leaf_totals_are_both_exact() -> None:
    taxonomy = pb.Taxonomy(id="t", root=pb.TaxonomyNode(id="t"))
    for i, weight in enumerate([1.0, 1.5, 1.0, 2.0, 1.0, 1.0, 1.5]):
        taxonomy.root.children.add(id=f"n{i}", title=f"N{i}", weight=weight)
    recipe = pb.Recipe(
        count=100,
        languages=[pb.LanguageShare(code="en", share=0.7), pb.LanguageShare(code="de", share=0.3)],
    )
    plan = plan_job(recipe, taxonomy, "j")
    by_language = Counter(s.language for s in plan.seeds)
    by_leaf = Counter(s.node_id for s in plan.seeds)
    assert by_language == {"en": 70, "de": 30}
    assert [by_leaf[f"n{i}"] for i in range(7)] == largest_remainder(
        [1.0, 1.5, 1.0, 2.0, 1.0, 1.0, 1.5], 100
    )
