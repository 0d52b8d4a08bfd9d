"""Plans: exact integer splits, even sequences, and reproducible seeds over every dimension."""

from __future__ import annotations

import math
import random
import tracemalloc
from collections import Counter
from functools import cache

import numpy as np
import pytest

from services.taxonomy.document import parse_taxonomy
from services.taxonomy.plan import (
    DIFFICULTIES,
    Plan,
    _even_positions,
    controlled_rounding,
    even_sequence,
    item_id,
    plan_job,
)
from services.taxonomy.settings import BUILTIN_DIR
from services.taxonomy.tree import SESSION, planning_leaves
from taxoforge.apportion import largest_remainder
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


def test_controlled_rounding_of_an_all_zero_table() -> None:
    assert controlled_rounding([0, 0], [0, 0, 0]) == [[0, 0, 0], [0, 0, 0]]


def test_controlled_rounding_keeps_whole_shares_exact() -> None:
    # every exact share is whole: nothing may be rounded up
    assert controlled_rounding([10, 30], [20, 20]) == [[5, 5], [15, 15]]


def test_largest_remainder_refuses_negative_or_infinite_weights() -> None:
    with pytest.raises(ValueError, match="finite and not negative"):
        largest_remainder([1, -1], 3)
    with pytest.raises(ValueError, match="finite and not negative"):
        largest_remainder([1, math.inf], 3)


# ---- even_sequence ----


def _window_deviation(sequence: list[int], counts: list[int]) -> float:
    """The largest gap, over every window and value, between its count and its share."""
    seq = np.asarray(sequence)
    n = len(seq)
    worst = 0.0
    for value, count in enumerate(counts):
        prefix = np.concatenate([[0], np.cumsum(seq == value)])
        for width in range(1, n + 1):
            held = prefix[width:] - prefix[:-width]
            worst = max(worst, float(np.max(np.abs(held - width * count / n))))
    return worst


def test_even_sequence_holds_each_value_exactly_its_count() -> None:
    rng = random.Random(3)
    for _ in range(200):
        counts = [rng.randint(0, 40) for _ in range(rng.randint(1, 8))]

        seq = even_sequence(counts)

        assert len(seq) == sum(counts)
        assert Counter(seq) == {v: c for v, c in enumerate(counts) if c}


def test_even_sequence_of_nothing_is_empty() -> None:
    assert even_sequence([]) == []
    assert even_sequence([0, 0]) == []


def test_even_sequence_interleaves() -> None:
    assert even_sequence([2, 2]) == [0, 1, 0, 1]
    assert even_sequence([1, 2]) == [1, 0, 1]
    assert even_sequence([3]) == [0, 0, 0]


def test_even_sequence_is_deterministic() -> None:
    assert even_sequence([200, 500, 300]) == even_sequence([200, 500, 300])


@pytest.mark.parametrize(
    "counts",
    [[200, 500, 300], [1, 1, 1], [1, 98, 1], [5, 0, 7], largest_remainder([1.0] * 27, 1000)],
    ids=["difficulties", "ones", "skewed", "with-zero", "27-task-types"],
)
def test_even_sequence_windows_hold_each_value_near_its_share(counts: list[int]) -> None:
    assert _window_deviation(even_sequence(counts), counts) <= 2


def test_even_sequence_windows_are_near_their_share_for_up_to_three_values() -> None:
    rng = random.Random(11)
    for _ in range(150):
        counts = [rng.randint(0, 300) for _ in range(rng.randint(1, 3))]
        if sum(counts):
            assert _window_deviation(even_sequence(counts), counts) <= 2, counts


def test_even_sequence_windows_stay_within_three_of_their_share_for_many_values() -> None:
    # Two values' slots can fall between two of another's, so a window may be off by a little
    # over 2; 3 is the bound that holds for any mix.
    assert _window_deviation(even_sequence([298, 6, 36, 41]), [298, 6, 36, 41]) <= 3
    rng = random.Random(12)
    for _ in range(150):
        counts = [rng.randint(0, 300) for _ in range(rng.randint(4, 8))]
        if sum(counts):
            assert _window_deviation(even_sequence(counts), counts) <= 3, counts


# ---- plan_job: trees for the new dimensions ----


def _tree_taxonomy() -> pb.Taxonomy:
    """tax > science > (physics w1, chemistry w3), art w1, draft (proposed) > sketch."""
    root = pb.TaxonomyNode(id="tax", title="Tax", kind="root", weight=1)
    science = root.children.add(id="science", title="Science", kind="field", weight=1)
    physics = science.children.add(id="physics", title="Physics", description="Forces", weight=1)
    physics.attributes["key_concepts"].items.extend(["force", "energy"])
    science.children.add(id="chemistry", title="Chemistry", weight=3)
    root.children.add(id="art", title="Art", weight=1)
    draft = root.children.add(id="draft", title="Draft", weight=1, status=pb.NODE_STATUS_PROPOSED)
    draft.children.add(id="sketch", title="Sketch", weight=1, status=pb.NODE_STATUS_PROPOSED)
    return pb.Taxonomy(id="tax", version="1", root=root)


def _task_taxonomy() -> pb.Taxonomy:
    """tasks > qa > (open-qa w1, factual-qa w3), code > code-gen w1."""
    root = pb.TaxonomyNode(id="tasks", title="Tasks", kind="root", weight=1)
    qa = root.children.add(id="qa", title="QA", kind="task_family", weight=1)
    for task_id, weight in (("open-qa", 1.0), ("factual-qa", 3.0)):
        task = qa.children.add(
            id=task_id, title=task_id.title(), description=f"{task_id} tasks", weight=weight
        )
        task.attributes["guidance"].text = f"how to {task_id}"
        task.attributes["example"].text = f"an {task_id} example"
    code = root.children.add(id="code", title="Code", kind="task_family", weight=1)
    code.children.add(id="code-gen", title="Code Generation", weight=1)
    return pb.Taxonomy(id="tasks", version="1", root=root)


def _by(plan, field: str) -> Counter[str]:
    return Counter(getattr(s, field) for s in plan.seeds)


def _shares(**shares: float) -> list[pb.Share]:
    return [pb.Share(name=name.replace("_", "-"), share=s) for name, s in shares.items()]


# ---- nodes: planning on subtrees ----


def test_the_whole_tree_skips_proposed_nodes() -> None:
    plan = plan_job(pb.Recipe(count=10), _tree_taxonomy(), "j")

    assert _by(plan, "node_id") == {"physics": 2, "chemistry": 6, "art": 2}


def test_nodes_restrict_the_plan_to_their_subtrees() -> None:
    plan = plan_job(pb.Recipe(count=8, nodes=["science"]), _tree_taxonomy(), "j")

    assert _by(plan, "node_id") == {"physics": 2, "chemistry": 6}
    assert {s.node_path for s in plan.seeds} == {"Science > Physics", "Science > Chemistry"}


def test_nodes_may_name_leaves_and_overlap() -> None:
    plan = plan_job(pb.Recipe(count=10, nodes=["art", "physics", "science"]), _tree_taxonomy(), "j")

    assert [c.node_id for c in plan.cells] == ["art", "physics", "chemistry"]
    assert _by(plan, "node_id") == {"art": 2, "physics": 2, "chemistry": 6}


def test_an_unknown_node_is_refused_with_a_suggestion() -> None:
    with pytest.raises(PermanentError) as caught:
        plan_job(pb.Recipe(count=5, nodes=["physcs"]), _tree_taxonomy(), "j")

    assert str(caught.value) == "unknown node in taxonomy 'tax': 'physcs'; did you mean physics?"


def test_an_unknown_node_without_a_close_name_has_no_suggestion() -> None:
    with pytest.raises(PermanentError) as caught:
        plan_job(pb.Recipe(count=5, nodes=["zzzzzz"]), _tree_taxonomy(), "j")

    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize("node_id", ["draft", "sketch", "physics-s01"])
def test_nodes_never_plan_on_proposed_nodes_or_sessions(node_id: str) -> None:
    taxonomy = _tree_taxonomy()
    physics = taxonomy.root.children[0].children[0]
    physics.children.add(id="physics-s01", title="Session 1", kind=SESSION, weight=1)
    try:
        plan = plan_job(pb.Recipe(count=4, nodes=[node_id]), taxonomy, "j")
    except PermanentError:
        return
    assert node_id not in _by(plan, "node_id")


# ---- distribution ----


def test_distribution_weight_is_the_default() -> None:
    by_weight = plan_job(pb.Recipe(count=10, distribution="weight"), _tree_taxonomy(), "j")
    default = plan_job(pb.Recipe(count=10), _tree_taxonomy(), "j")

    assert list(by_weight.seeds) == list(default.seeds)


def test_distribution_uniform_ignores_weights() -> None:
    plan = plan_job(pb.Recipe(count=10, distribution="uniform"), _tree_taxonomy(), "j")

    assert _by(plan, "node_id") == {"physics": 4, "chemistry": 3, "art": 3}


def test_an_unknown_distribution_is_refused() -> None:
    with pytest.raises(PermanentError, match="distribution 'zipf' is not one of weight, uniform"):
        plan_job(pb.Recipe(count=10, distribution="zipf"), _tree_taxonomy(), "j")


# ---- node_counts ----


def _counts(**counts: int) -> list[pb.NodeCount]:
    return [pb.NodeCount(node_id=node_id, count=n) for node_id, n in counts.items()]


def test_node_counts_spread_an_inner_node_over_its_leaves_by_weight() -> None:
    recipe = pb.Recipe(count=10, node_counts=_counts(science=8, art=2))

    plan = plan_job(recipe, _tree_taxonomy(), "j")

    assert _by(plan, "node_id") == {"physics": 2, "chemistry": 6, "art": 2}


def test_node_counts_override_the_distribution_and_may_leave_leaves_out() -> None:
    recipe = pb.Recipe(count=7, distribution="uniform", node_counts=_counts(chemistry=7))

    plan = plan_job(recipe, _tree_taxonomy(), "j")

    assert _by(plan, "node_id") == {"chemistry": 7}


def test_node_counts_on_a_leaf_and_its_parent_add_up() -> None:
    recipe = pb.Recipe(count=9, node_counts=_counts(science=4, physics=5))

    plan = plan_job(recipe, _tree_taxonomy(), "j")

    assert _by(plan, "node_id") == {"physics": 6, "chemistry": 3}


def test_node_counts_must_sum_to_count() -> None:
    with pytest.raises(PermanentError, match="node_counts sum to 9 but count is 10"):
        plan_job(pb.Recipe(count=10, node_counts=_counts(art=9)), _tree_taxonomy(), "j")


def test_node_counts_refuse_an_unknown_node_with_a_suggestion() -> None:
    with pytest.raises(PermanentError, match=r"unknown node .*'chemstry'; did you mean chemistry"):
        plan_job(pb.Recipe(count=3, node_counts=_counts(chemstry=3)), _tree_taxonomy(), "j")


def test_node_counts_refuse_a_negative_count() -> None:
    recipe = pb.Recipe(count=3, node_counts=_counts(art=5, physics=-2))

    with pytest.raises(PermanentError, match="must not be negative"):
        plan_job(recipe, _tree_taxonomy(), "j")


def test_node_counts_outside_the_planned_nodes_are_refused() -> None:
    recipe = pb.Recipe(count=3, nodes=["science"], node_counts=_counts(art=3))

    with pytest.raises(PermanentError, match="'art' has no leaf in the planned part"):
        plan_job(recipe, _tree_taxonomy(), "j")


# ---- difficulties ----


def test_every_known_difficulty_can_be_planned() -> None:
    names = list(DIFFICULTIES)
    recipe = pb.Recipe(count=40, difficulties=[pb.Share(name=n, share=0.25) for n in names])

    plan = plan_job(recipe, _tree_taxonomy(), "j")

    assert names == ["easy", "medium", "hard", "expert"]
    assert _by(plan, "difficulty") == dict.fromkeys(names, 10)


def test_difficulty_totals_are_exact() -> None:
    recipe = pb.Recipe(count=10, difficulties=_shares(easy=0.3, hard=0.7))

    plan = plan_job(recipe, _tree_taxonomy(), "j")

    assert _by(plan, "difficulty") == {"easy": 3, "hard": 7}


def test_no_difficulties_leaves_the_field_empty() -> None:
    plan = plan_job(pb.Recipe(count=5), _tree_taxonomy(), "j")

    assert _by(plan, "difficulty") == {"": 5}
    assert not [t for t in plan.totals if t.dimension == "difficulty"]


def test_an_unknown_difficulty_is_refused_with_a_suggestion() -> None:
    with pytest.raises(PermanentError) as caught:
        plan_job(pb.Recipe(count=5, difficulties=_shares(hrad=1.0)), _tree_taxonomy(), "j")

    assert str(caught.value) == "unknown difficulty 'hrad'; did you mean hard?"


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"easy": 0.5, "hard": 0.4}, r"difficulty shares sum to 0\.9; they must sum to 1"),
        ({"easy": 1.0, "hard": 0.0}, r"difficulty shares must be > 0; check hard"),
        ({"easy": 1.5, "hard": -0.5}, r"difficulty shares must be > 0; check hard"),
        ({"easy": math.nan, "hard": 1.0}, r"difficulty shares must be > 0; check easy"),
    ],
)
def test_difficulty_shares_must_be_positive_and_sum_to_one(
    shares: dict[str, float], message: str
) -> None:
    with pytest.raises(PermanentError, match=message):
        plan_job(pb.Recipe(count=5, difficulties=_shares(**shares)), _tree_taxonomy(), "j")


def test_a_difficulty_listed_twice_is_refused() -> None:
    recipe = pb.Recipe(
        count=5,
        difficulties=[pb.Share(name="easy", share=0.5), pb.Share(name="easy", share=0.5)],
    )

    with pytest.raises(PermanentError, match="difficulty easy listed twice"):
        plan_job(recipe, _tree_taxonomy(), "j")


# ---- task types ----


def test_a_task_taxonomy_without_task_types_uses_all_its_leaves_by_weight() -> None:
    plan = plan_job(pb.Recipe(count=10), _tree_taxonomy(), "j", tasks=_task_taxonomy())

    assert _by(plan, "task_type") == {"open-qa": 2, "factual-qa": 6, "code-gen": 2}


def test_task_types_spread_an_inner_name_over_its_leaves_by_weight() -> None:
    recipe = pb.Recipe(count=8, task_types=_shares(qa=0.5, code_gen=0.5))

    plan = plan_job(recipe, _tree_taxonomy(), "j", tasks=_task_taxonomy())

    assert _by(plan, "task_type") == {"open-qa": 1, "factual-qa": 3, "code-gen": 4}


def test_task_types_naming_a_leaf_and_its_family_add_up() -> None:
    recipe = pb.Recipe(count=8, task_types=_shares(qa=0.5, factual_qa=0.5))

    plan = plan_job(recipe, _tree_taxonomy(), "j", tasks=_task_taxonomy())

    assert _by(plan, "task_type") == {"open-qa": 1, "factual-qa": 7}


def test_task_types_need_a_task_taxonomy() -> None:
    with pytest.raises(PermanentError, match="task_types need a task taxonomy"):
        plan_job(pb.Recipe(count=5, task_types=_shares(qa=1.0)), _tree_taxonomy(), "j")


def test_an_unknown_task_type_is_refused_with_a_suggestion() -> None:
    recipe = pb.Recipe(count=5, task_types=_shares(code_gn=1.0))

    with pytest.raises(PermanentError) as caught:
        plan_job(recipe, _tree_taxonomy(), "j", tasks=_task_taxonomy())

    assert str(caught.value).startswith(
        "unknown task type in 'tasks': 'code-gn'; did you mean code-gen"
    )


def test_task_type_shares_must_sum_to_one() -> None:
    recipe = pb.Recipe(count=5, task_types=_shares(qa=0.5, code=0.6))

    with pytest.raises(PermanentError, match=r"task type shares sum to 1\.1"):
        plan_job(recipe, _tree_taxonomy(), "j", tasks=_task_taxonomy())


def test_seeds_carry_their_task() -> None:
    recipe = pb.Recipe(count=4, task_types=_shares(open_qa=1.0))

    plan = plan_job(recipe, _tree_taxonomy(), "j", tasks=_task_taxonomy())

    for seed in plan.seeds:
        assert seed.task_type == "open-qa"
        assert seed.task_title == "Open-Qa"
        assert seed.task_description == "open-qa tasks"
        assert seed.task_attributes["guidance"].text == "how to open-qa"
        assert seed.task_attributes["example"].text == "an open-qa example"


def test_without_a_task_taxonomy_seeds_have_no_task() -> None:
    plan = plan_job(pb.Recipe(count=3), _tree_taxonomy(), "j")

    assert {(s.task_type, s.task_title) for s in plan.seeds} == {("", "")}
    assert not [t for t in plan.totals if t.dimension == "task_type"]


# ---- what seeds carry, and the totals ----


def test_seeds_carry_the_leaf_attributes_and_difficulty() -> None:
    recipe = pb.Recipe(count=6, nodes=["physics"], difficulties=_shares(medium=1.0))

    plan = plan_job(recipe, _tree_taxonomy(), "j")

    for seed in plan.seeds:
        assert seed.node_id == "physics"
        assert seed.node_description == "Forces"
        assert list(seed.node_attributes["key_concepts"].items) == ["force", "energy"]
        assert seed.difficulty == "medium"


def test_seeds_of_a_subject_carry_its_syllabus() -> None:
    taxonomy = _tree_taxonomy()
    physics = taxonomy.root.children[0].children[0]
    for i, concepts in enumerate((["vectors"], ["work", "power"]), 1):
        session = physics.children.add(id=f"physics-s0{i}", title=f"S{i}", kind=SESSION, weight=1)
        session.attributes["key_concepts"].items.extend(concepts)

    plan = plan_job(pb.Recipe(count=10), taxonomy, "j")

    physics_seeds = [s for s in plan.seeds if s.node_id == "physics"]
    assert len(physics_seeds) == 2
    for seed in physics_seeds:
        assert list(seed.syllabus) == [
            pb.Session(title="S1", key_concepts=["vectors"]),
            pb.Session(title="S2", key_concepts=["work", "power"]),
        ]
    assert all(not s.syllabus for s in plan.seeds if s.node_id != "physics")


def _totals(plan) -> dict[tuple[str, str], int]:
    return {(t.dimension, t.value): t.count for t in plan.totals}


def test_plan_totals_match_the_seeds() -> None:
    recipe = pb.Recipe(
        count=50,
        seed=3,
        languages=[pb.LanguageShare(code="en", share=0.6), pb.LanguageShare(code="fr", share=0.4)],
        difficulties=_shares(easy=0.5, hard=0.5),
    )

    plan = plan_job(recipe, _tree_taxonomy(), "j", tasks=_task_taxonomy())

    expected = {}
    for dimension, field in (
        ("node", "node_id"),
        ("language", "language"),
        ("difficulty", "difficulty"),
        ("task_type", "task_type"),
        ("strategy", "strategy"),
    ):
        for value, count in _by(plan, field).items():
            expected[(dimension, value)] = count
    assert _totals(plan) == expected
    # sorted by dimension, then value
    dimensions = [t.dimension for t in plan.totals]
    assert dimensions == sorted(
        dimensions, key=["node", "language", "difficulty", "task_type", "strategy"].index
    )


# ---- the acceptance test: 1,000 seeds over the built-in taxonomies ----


@cache
def _builtin(name: str) -> pb.Taxonomy:
    return parse_taxonomy((BUILTIN_DIR / f"{name}.yaml").read_text(encoding="utf-8"), name)


LANGUAGES = {"en": 0.5, "fr": 0.3, "de": 0.2}
LEVELS = {"easy": 0.2, "medium": 0.5, "hard": 0.3}


def _full_recipe(seed: int) -> pb.Recipe:
    return pb.Recipe(
        count=1000,
        seed=seed,
        languages=[pb.LanguageShare(code=c, share=s) for c, s in LANGUAGES.items()],
        difficulties=[pb.Share(name=n, share=s) for n, s in LEVELS.items()],
        task_taxonomy_id="tasks",
    )


def _full_plan(seed: int = 7):
    return plan_job(_full_recipe(seed), _builtin("knowledge"), "job-1", tasks=_builtin("tasks"))


def _expected(taxonomy: pb.Taxonomy, total: int) -> dict[str, int]:
    leaves = planning_leaves(taxonomy.root)
    counts = largest_remainder([leaf.weight for leaf, _ in leaves], total)
    return {leaf.id: n for (leaf, _), n in zip(leaves, counts, strict=True) if n}


def test_full_plan_hits_every_requested_count() -> None:
    plan = _full_plan()

    assert len(plan.seeds) == 1000
    assert _by(plan, "language") == {"en": 500, "fr": 300, "de": 200}
    assert _by(plan, "difficulty") == {"easy": 200, "medium": 500, "hard": 300}
    assert _by(plan, "task_type") == _expected(_builtin("tasks"), 1000)
    assert _by(plan, "node_id") == _expected(_builtin("knowledge"), 1000)
    assert sum(c.count for c in plan.cells) == 1000


def test_full_plan_balances_language_and_difficulty_jointly() -> None:
    plan = _full_plan()

    joint = Counter((s.language, s.difficulty) for s in plan.seeds)
    for language, language_share in LANGUAGES.items():
        for level, level_share in LEVELS.items():
            expected = language_share * level_share * 1000
            assert abs(joint[(language, level)] - expected) <= 3, (language, level)


def test_full_plan_is_identical_for_the_same_recipe_seed() -> None:
    first, second = _full_plan(7), _full_plan(7)

    assert list(first.seeds) == list(second.seeds)
    assert [s.SerializeToString(deterministic=True) for s in first.seeds] == [
        s.SerializeToString(deterministic=True) for s in second.seeds
    ]
    assert list(first.cells) == list(second.cells)
    assert list(first.totals) == list(second.totals)


def test_full_plan_differs_for_another_recipe_seed() -> None:
    first, other = _full_plan(7), _full_plan(8)

    def fields(plan) -> list[tuple[str, str, str, str]]:
        return [(s.node_id, s.language, s.difficulty, s.task_type) for s in plan.seeds]

    assert fields(first) != fields(other)
    assert list(first.totals) == list(other.totals)


def test_full_plan_seeds_carry_what_the_generator_needs() -> None:
    plan = _full_plan()
    levels = set(DIFFICULTIES)

    for seed in plan.seeds:
        assert seed.job_id == "job-1"
        assert seed.node_path.count(" > ") == 2
        assert seed.node_attributes["key_concepts"].items
        assert seed.difficulty in levels
        assert seed.task_title and seed.task_description
        assert seed.task_attributes["guidance"].text
        assert seed.task_attributes["example"].text
    assert _totals(plan)[("language", "en")] == 500
    assert _totals(plan)[("difficulty", "medium")] == 500


def test_strategies_are_a_dimension_with_exact_totals() -> None:
    recipe = pb.Recipe(
        count=100,
        seed=4,
        strategies=[
            pb.Share(name="glan", share=0.5),
            pb.Share(name="tap", share=0.3),
            pb.Share(name="codeclm", share=0.2),
        ],
    )
    plan = plan_job(recipe, _tree_taxonomy(), "j")
    assert _by(plan, "strategy") == {"glan": 50, "tap": 30, "codeclm": 20}


def test_without_strategies_every_seed_is_tap() -> None:
    plan = plan_job(pb.Recipe(count=10), _tree_taxonomy(), "j")
    assert _by(plan, "strategy") == {"tap": 10}


def test_an_unknown_strategy_is_refused_with_a_suggestion() -> None:
    recipe = pb.Recipe(count=10, strategies=[pb.Share(name="glam", share=1.0)])
    with pytest.raises(PermanentError, match="unknown strategy 'glam'; did you mean glan"):
        plan_job(recipe, _tree_taxonomy(), "j")


# ---- plans of the largest count ----


def _big_plan(count: int) -> tuple[Plan, int]:
    """A plan of ``count`` seeds, and the most memory planning it took (bytes)."""
    recipe = _full_recipe(3)
    recipe.count = count
    knowledge, tasks = _builtin("knowledge"), _builtin("tasks")
    tracemalloc.start()
    try:
        plan = plan_job(recipe, knowledge, "job-1", tasks=tasks)
        return plan, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_million_seed_plan_is_counted_at_once_and_its_seeds_made_as_read() -> None:
    plan, peak = _big_plan(1_000_000)

    assert peak < 4 << 20  # cells and totals come from counts: no seed exists yet
    assert len(plan.seeds) == 1_000_000 and sum(c.count for c in plan.cells) == 1_000_000
    totals = {(t.dimension, t.value): t.count for t in plan.totals}
    assert totals[("language", "en")] == 500_000 and totals[("difficulty", "hard")] == 300_000
    first, last = plan.seeds[:256], plan.seeds[-256:]
    assert [s.index for s in first + last] == [*range(256), *range(999_744, 1_000_000)]
    assert plan.seeds[-1] == last[-1] and last[-1].item_id == item_id(999_999)
    assert all(s.node_attributes["key_concepts"].items and s.task_title for s in first + last)
    with pytest.raises(IndexError):
        plan.seeds[1_000_000]


def test_reading_a_big_plans_seeds_holds_a_few_integers_per_seed() -> None:
    plan, _ = _big_plan(100_000)
    tracemalloc.start()
    try:
        batches = [plan.seeds[start : start + 256] for start in range(0, 100_000, 25_000)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(map(len, batches)) == 1024
    assert peak < 20 << 20  # the seeds as messages would be ~300 MB


@pytest.mark.parametrize("counts", [[1], [3, 1], [5, 0, 2], [7, 7, 7], [1000, 3, 250, 1]])
def test_the_array_layout_spreads_values_as_even_sequence_does(counts: list[int]) -> None:
    assert _even_positions(counts).tolist() == even_sequence(counts)
