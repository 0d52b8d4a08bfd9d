"""The selection methods: clusters on tags, quotas, comparison planning, TACOS and its baselines."""

from __future__ import annotations

import numpy as np
import pytest

from services.selector.examples import Candidate
from services.selector.methods.clusters import (
    UNTAGGED,
    ClusterResult,
    auto_clusters,
    cluster_by_key,
    cluster_by_tags,
    cluster_by_vectors,
    references,
)
from services.selector.methods.measurement import measure
from services.selector.methods.quotas import plan_comparisons, quotas
from services.selector.methods.ranking import Budget
from services.selector.methods.select import select


def _cand(
    item_id: str,
    quality: float | None = None,
    *,
    judge: float | None = None,
    tokens: int = 10,
    response: str = "reply",
    cluster: int = -1,
    tags: list[str] | None = None,
) -> Candidate:
    """A candidate whose quality is ``quality`` (as its comparative score) or ``judge``."""
    return Candidate(
        item_id=item_id,
        query=f"query {item_id}",
        response_chars=len(response),
        tokens=tokens,
        judge_score=judge,
        comparative=quality,
        cluster=cluster,
        tags=tags or [],
    )


def _groups(assignment: np.ndarray) -> set[frozenset[int]]:
    """The partition an assignment makes, independent of cluster numbering."""
    out: dict[int, set[int]] = {}
    for i, c in enumerate(assignment.tolist()):
        out.setdefault(c, set()).add(i)
    return {frozenset(g) for g in out.values()}


# ---- budget and k ----


def test_budget_rejects_a_negative_amount_and_an_unknown_unit():
    with pytest.raises(ValueError, match="amount"):
        Budget(-1)
    with pytest.raises(ValueError, match="unit"):
        Budget(10, "bytes")  # type: ignore[arg-type]


def test_auto_clusters_is_the_root_of_half_n_between_1_and_500():
    assert auto_clusters(0) == 1
    assert auto_clusters(2) == 1
    assert auto_clusters(200) == 10
    assert auto_clusters(100_000) == 224
    assert auto_clusters(10**9) == 500


# ---- quotas ----


@pytest.mark.parametrize("rule", ["proportional", "sqrt", "equal"])
def test_quotas_sum_exactly_and_never_exceed_a_cluster_for_random_sizes(rule):
    rng = np.random.default_rng(7)
    for trial in range(400):
        k = int(rng.integers(1, 30))
        kind = trial % 4
        if kind == 0:  # small clusters, zeros and ones frequent
            sizes = rng.integers(0, 3, size=k)
        elif kind == 1:  # heavy skew: one huge cluster and tiny ones
            sizes = rng.integers(0, 5, size=k)
            sizes[int(rng.integers(0, k))] = int(rng.integers(1000, 100_000))
        elif kind == 2:  # token-sized masses
            sizes = rng.integers(0, 50_000, size=k)
        else:
            sizes = rng.integers(0, 200, size=k)
        sizes_list = [int(s) for s in sizes]
        total = int(rng.integers(0, 2 * sum(sizes_list) + 2))
        got = quotas(sizes_list, total, rule)
        assert len(got) == k
        assert sum(got) == min(total, sum(sizes_list)), (sizes_list, total, got)
        assert all(0 <= q <= s for q, s in zip(got, sizes_list, strict=True))


def test_quotas_above_the_total_give_every_cluster_all_it_has():
    assert quotas([3, 0, 1, 7], 1000, "equal") == [3, 0, 1, 7]
    assert quotas([3, 0, 1, 7], 11, "sqrt") == [3, 0, 1, 7]


def test_quotas_follow_the_rule_weights():
    assert quotas([60, 30, 10], 10, "proportional") == [6, 3, 1]
    assert quotas([100, 25, 25], 8, "sqrt") == [4, 2, 2]
    assert quotas([60, 30, 10], 9, "equal") == [3, 3, 3]


def test_sqrt_and_equal_quotas_give_small_clusters_more_than_proportional():
    sizes = [1000, 20, 20, 20]
    proportional = quotas(sizes, 100, "proportional")
    sqrt = quotas(sizes, 100, "sqrt")
    equal = quotas(sizes, 100, "equal")
    for small in (1, 2, 3):
        assert proportional[small] < sqrt[small] < equal[small]


def test_quotas_redistribute_what_a_capped_cluster_cannot_use():
    # equal shares would be 20 each; the cluster of 2 gives its 18 spare to the others.
    assert quotas([2, 100, 100], 60, "equal") == [2, 29, 29]


def test_quota_ties_go_to_the_lower_cluster_index():
    assert quotas([5, 5, 5], 4, "proportional") == [2, 1, 1]
    assert quotas([5, 5, 5], 5, "equal") == [2, 2, 1]


def test_quotas_accept_a_mapping_of_cluster_sizes():
    assert quotas({0: 10, 2: 10}, 4, "proportional") == [2, 0, 2]


def test_quotas_reject_negative_sizes_totals_and_unknown_rules():
    with pytest.raises(ValueError):
        quotas([1, -1], 1, "equal")
    with pytest.raises(ValueError):
        quotas([1, 1], -1, "equal")
    with pytest.raises(ValueError, match="rule"):
        quotas([1, 1], 1, "cubic")  # type: ignore[arg-type]


# ---- clustering ----

_VOCABS = (
    ["python", "recursion", "algorithm", "debugging", "sorting", "complexity"],
    ["cooking", "recipe", "baking", "vegetarian", "dessert", "spice"],
    ["history", "rome", "empire", "war", "medieval", "politics"],
)


def _planted_tags(seed: int, per_group: int = 12) -> tuple[list[list[str]], list[int]]:
    """Items of 3 groups with disjoint tag vocabularies, shuffled: (tags, group per item).

    Each item has its group's first tag and 1 to 3 more of the group's tags.
    """
    rng = np.random.default_rng(seed)
    tags: list[list[str]] = []
    group: list[int] = []
    for g, vocab in enumerate(_VOCABS):
        for _ in range(per_group):
            more = rng.choice(len(vocab) - 1, size=int(rng.integers(1, 4)), replace=False)
            tags.append([vocab[0], *(vocab[int(j) + 1] for j in more)])
            group.append(g)
    order = rng.permutation(len(tags))
    return [tags[i] for i in order], [group[i] for i in order]


def test_cluster_by_tags_recovers_planted_groups_of_distinct_tags():
    for seed in range(5):
        tags, group = _planted_tags(seed)
        result = cluster_by_tags(tags, k=3, seed=seed)
        assert result.k == 3
        assert _groups(result.assignment) == _groups(np.array(group))
        assert sorted(result.sizes) == [12, 12, 12]
        for c, label in enumerate(result.labels):
            members = {group[i] for i in np.flatnonzero(result.assignment == c)}
            assert len(label.split(", ")) == 3
            assert set(label.split(", ")) <= set(_VOCABS[members.pop()])


def test_cluster_by_tags_is_deterministic_by_seed():
    rng = np.random.default_rng(3)
    vocab = [f"t{i}" for i in range(40)]
    tags = [[vocab[int(j)] for j in rng.choice(40, size=3, replace=False)] for _ in range(300)]
    a = cluster_by_tags(tags, k=8, seed=11)
    b = cluster_by_tags(tags, k=8, seed=11)
    assert np.array_equal(a.assignment, b.assignment)
    assert a.labels == b.labels


def test_cluster_by_tags_keeps_identical_tag_sets_together_and_caps_k_at_distinct_sets():
    tags = [["a", "b"], ["b", "a"], ["c"], ["c", "c"], ["a", "b"]]
    result = cluster_by_tags(tags, k=10, seed=0)
    assert result.k == 2
    assert _groups(result.assignment) == {frozenset({0, 1, 4}), frozenset({2, 3})}
    assert result.sizes == [3, 2]


def test_untagged_items_get_their_own_last_cluster():
    tags = [["math"], [], ["math", "algebra"], [""], ["poetry"]]
    result = cluster_by_tags(tags, k=2, seed=0)
    assert result.untagged == result.k - 1
    assert result.labels[result.untagged] == UNTAGGED
    assert set(np.flatnonzero(result.assignment == result.untagged)) == {1, 3}
    assert result.sizes[result.untagged] == 2
    assert sum(result.sizes) == 5


def test_cluster_by_tags_with_no_tags_at_all_is_one_untagged_cluster():
    result = cluster_by_tags([[], []], k=5, seed=0)
    assert result.labels == [UNTAGGED]
    assert result.assignment.tolist() == [0, 0]


def test_cluster_by_tags_uses_tag_embeddings_when_given():
    # Synonyms with different spellings: one-hot sees 4 unrelated tags, embeddings see 2 topics.
    tags = [["car"], ["automobile"], ["car", "automobile"], ["dog"], ["puppy"], ["dog", "puppy"]]
    vectors = {
        "car": np.array([1.0, 0.05, 0.0]),
        "automobile": np.array([1.0, -0.05, 0.0]),
        "dog": np.array([0.0, 0.05, 1.0]),
        "puppy": np.array([0.0, -0.05, 1.0]),
    }
    result = cluster_by_tags(tags, k=2, seed=0, tag_vectors=vectors)
    assert _groups(result.assignment) == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}


def test_cluster_by_tags_rejects_a_tag_without_a_vector():
    with pytest.raises(ValueError, match="no vector"):
        cluster_by_tags([["a"], ["b"]], k=2, seed=0, tag_vectors={"a": np.ones(3)})


def test_cluster_by_key_makes_one_cluster_per_key_largest_first():
    keys = ["Science > Physics", "Arts", "Science > Physics", "", "Arts", "Arts"]
    result = cluster_by_key(keys)
    assert result.labels == ["Arts", "Science > Physics", UNTAGGED]
    assert result.sizes == [3, 2, 1]
    assert result.assignment.tolist() == [1, 0, 1, 2, 0, 0]
    assert result.untagged == 2
    assert cluster_by_key(["b", "a"]).labels == ["a", "b"]
    assert cluster_by_key(["b", "a"]).untagged == -1


def test_cluster_by_vectors_separates_planted_blobs_and_sets_zero_rows_apart():
    rng = np.random.default_rng(0)
    centers = np.eye(16)[:3]
    rows = [centers[g] + 0.05 * rng.standard_normal(16) for g in (0, 1, 2) for _ in range(20)]
    vectors = np.vstack([*rows, np.zeros(16)])
    result = cluster_by_vectors(vectors, k=3, seed=4)
    blobs = [frozenset(range(g * 20, g * 20 + 20)) for g in range(3)]
    assert _groups(result.assignment) == {*blobs, frozenset({60})}
    assert result.labels[result.untagged] == UNTAGGED
    assert result.labels[0] == "cluster 0"


def test_references_are_the_medoids_with_ties_to_the_lower_index():
    result = cluster_by_key(["a", "a", "a", "b", "b"])
    vectors = np.array(
        [[1.0, 0.0], [0.7, 0.7], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32
    )
    assert references(result, vectors) == [1, 3]


def test_references_default_to_the_vectors_clustering_used():
    tags = [["x"], ["x", "y"], ["y", "x"], ["x", "y", "z"], ["q"], ["q", "r"]]
    result = cluster_by_tags(tags, k=2, seed=0)
    assert _groups(result.assignment) == {frozenset({0, 1, 2, 3}), frozenset({4, 5})}
    refs = references(result)
    # "x"+"y" is the closest to the group's IDF-weighted mean direction; item 1 before item 2.
    assert refs[result.assignment[0]] == 1
    assert refs[result.assignment[4]] in (4, 5)


def test_references_without_vectors_are_seeded_members_of_their_cluster():
    result = cluster_by_key(["a"] * 10 + ["b"] * 10)
    refs = references(result, seed=5)
    assert refs == references(result, seed=5)
    assert [int(result.assignment[r]) for r in refs] == [0, 1]


# ---- comparison planning ----


def _key_clusters(sizes: list[int]) -> tuple[ClusterResult, list[int]]:
    keys = [f"k{c:02d}" for c, size in enumerate(sizes) for _ in range(size)]
    result = cluster_by_key(keys)
    refs = [int(np.flatnonzero(result.assignment == c)[0]) for c in range(result.k)]
    return result, refs


def test_plan_comparisons_with_no_budget_compares_every_item_but_the_references():
    result, refs = _key_clusters([4, 3, 1])
    planned = plan_comparisons(result, refs, [4, 3, 1], 0, [None] * 8, seed=0)
    assert planned == sorted(set(range(8)) - set(refs))


def test_plan_comparisons_never_exceed_half_the_calls_nor_compare_references():
    rng = np.random.default_rng(1)
    for _ in range(100):
        sizes = [int(s) for s in rng.integers(1, 20, size=int(rng.integers(1, 8)))]
        result, refs = _key_clusters(sizes)
        quota = quotas(result.sizes, int(rng.integers(0, sum(sizes) + 1)), "sqrt")
        n = len(result.assignment)
        priors = [None if rng.random() < 0.3 else float(rng.integers(1, 101)) for _ in range(n)]
        calls = int(rng.integers(1, 3 * n))
        planned = plan_comparisons(result, refs, quota, calls, priors, seed=2)
        assert len(planned) <= calls // 2
        assert not set(planned) & set(refs)
        assert len(set(planned)) == len(planned)
        for c, q in enumerate(quota):
            if q == 0:
                assert not any(result.assignment[i] == c for i in planned)


def test_plan_comparisons_share_the_budget_by_quota():
    result, refs = _key_clusters([100, 100, 100])
    planned = plan_comparisons(result, refs, [30, 10, 0], 80, [None] * 300, seed=0)
    per_cluster = np.bincount(result.assignment[planned], minlength=3).tolist()
    assert per_cluster == [30, 10, 0]


def test_plan_comparisons_cap_a_cluster_at_its_members_but_the_reference():
    result, refs = _key_clusters([50, 3])
    planned = plan_comparisons(result, refs, [10, 10], 40, [None] * 53, seed=0)
    per_cluster = np.bincount(result.assignment[planned], minlength=2).tolist()
    assert per_cluster == [18, 2]


def test_plan_comparisons_prefer_the_highest_priors_then_unscored():
    result, refs = _key_clusters([6])
    priors: list[float | None] = [99.0, 10.0, None, 80.0, 95.0, None]
    assert plan_comparisons(result, refs, [6], 4, priors, seed=0) == [3, 4]
    assert plan_comparisons(result, refs, [6], 6, priors, seed=0) == [1, 3, 4]
    four = plan_comparisons(result, refs, [6], 8, priors, seed=0)
    assert len(four) == 4 and {1, 3, 4} < set(four)
    assert plan_comparisons(result, refs, [6], 10, priors, seed=0) == [1, 2, 3, 4, 5]


def test_plan_comparisons_break_ties_with_the_seed():
    result, refs = _key_clusters([40])
    picks = {tuple(plan_comparisons(result, refs, [40], 10, [None] * 40, seed=s)) for s in range(6)}
    assert len(picks) > 1
    again = plan_comparisons(result, refs, [40], 10, [None] * 40, seed=3)
    assert again == plan_comparisons(result, refs, [40], 10, [None] * 40, seed=3)


# ---- selection ----


def _clustered(seed: int, sizes: list[int]) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [
        _cand(
            f"c{c}-{j:03d}",
            float(rng.integers(1, 101)),
            tokens=int(rng.integers(20, 400)),
            cluster=c,
        )
        for c, size in enumerate(sizes)
        for j in range(size)
    ]


def test_tacos_with_a_records_budget_selects_exactly_the_budget():
    for seed in range(10):
        cands = _clustered(seed, [37, 5, 1, 12, 0, 60])
        for amount in (1, 7, 50, 115):
            for rule in ("proportional", "sqrt", "equal"):
                chosen = select("tacos", cands, Budget(amount), rule=rule).chosen
                assert len(chosen) == amount
                assert len(set(chosen)) == amount
        assert len(select("tacos", cands, Budget(1000)).chosen) == len(cands)
        assert len(select("tacos", cands, Budget(0)).chosen) == len(cands)


def test_tacos_with_a_tokens_budget_never_exceeds_it_and_nearly_fills_it():
    for seed in range(10):
        cands = _clustered(seed, [40, 6, 2, 15, 80])
        for amount in (500, 5_000, 20_000):
            for rule in ("proportional", "sqrt", "equal"):
                picked = select("tacos", cands, Budget(amount, "tokens"), rule=rule)
                assert picked.tokens == sum(cands[i].tokens for i in picked.chosen)
                assert picked.tokens <= amount
                # the smallest candidate is at most 20 tokens short of 400: leftover fill packs
                assert picked.tokens >= amount - 400


def test_tacos_takes_each_clusters_best_first_within_its_quota():
    cands = _clustered(3, [30, 20, 10])
    picked = select("tacos", cands, Budget(12), rule="equal")
    assert picked.quota == {0: 4, 1: 4, 2: 4}
    assert picked.taken == {0: 4, 1: 4, 2: 4}
    for c in range(3):
        members = [i for i, cand in enumerate(cands) if cand.cluster == c]
        best = sorted(members, key=lambda i: (-(cands[i].quality or 0.0), cands[i].item_id))[:4]
        assert sorted(i for i in picked.chosen if cands[i].cluster == c) == sorted(best)
    qualities = [cands[i].quality or 0.0 for i in picked.chosen]
    assert qualities == sorted(qualities, reverse=True)


def test_tacos_treats_unclustered_candidates_as_one_more_group():
    cands = [_cand(f"a{i}", 50.0, cluster=0) for i in range(5)] + [
        _cand(f"u{i}", 90.0) for i in range(5)
    ]
    picked = select("tacos", cands, Budget(4), rule="equal")
    assert picked.quota == {0: 2, -1: 2}
    assert picked.taken == {0: 2, -1: 2}


def test_unscored_candidates_rank_after_every_scored_one():
    cands = [_cand("a"), _cand("b", 3.0), _cand("c", judge=1.0), _cand("d", 99.0), _cand("e")]
    assert select("score", cands, Budget(0)).chosen == [3, 1, 2, 0, 4]
    for c in cands:
        c.cluster = 0
    assert select("tacos", cands, Budget(3)).chosen == [3, 1, 2]


def test_ranking_ties_break_by_judge_score_then_item_id():
    cands = [
        _cand("z", 80.0, judge=50.0),
        _cand("y", 80.0, judge=70.0),
        _cand("b", 80.0, judge=50.0),
        _cand("a", 80.0),
    ]
    assert select("score", cands, Budget(0)).chosen == [1, 2, 0, 3]


def test_deita_skips_a_candidate_too_close_to_one_already_chosen():
    cands = [_cand("a", 90.0), _cand("a2", 85.0), _cand("b", 80.0), _cand("c", 70.0)]
    emb = np.array([[1.0, 0.0, 0.0], [0.99, 0.14, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert select("deita", cands, Budget(2), embeddings=emb).chosen == [0, 2]
    assert select("deita", cands, Budget(0), embeddings=emb).chosen == [0, 2, 3]
    loose = select("deita", cands, Budget(2), embeddings=emb, diversity_threshold=0.999)
    assert loose.chosen == [0, 1]


def test_deita_filters_near_duplicates_across_many_blocks():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 32))
    emb = np.vstack([base, base + 0.01 * rng.standard_normal((300, 32))])  # 300 near pairs
    cands = [_cand(f"i{i:04d}", float(i % 300) + (0.5 if i < 300 else 0.0)) for i in range(600)]
    chosen = select("deita", cands, Budget(0), embeddings=emb).chosen
    assert sorted(chosen) == list(range(300))  # each original beats its copy by 0.5
    capped = select("deita", cands, Budget(100), embeddings=emb).chosen
    assert capped == chosen[:100]
    by_tokens = select("deita", cands, Budget(1005, "tokens"), embeddings=emb)
    assert by_tokens.chosen == chosen[:100]  # 10 tokens each
    assert by_tokens.tokens == 1000


def test_deita_embeds_on_demand_only_the_blocks_it_reaches():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((1500, 32))
    emb = np.vstack([base, base + 0.01 * rng.standard_normal((1500, 32))])
    cands = [_cand(f"i{i:05d}", float(i % 1500) + (0.5 if i < 1500 else 0.0)) for i in range(3000)]
    asked: list[int] = []

    def embed(rows: np.ndarray) -> np.ndarray:
        asked.extend(rows.tolist())
        return emb[rows]

    whole = select("deita", cands, Budget(300), embeddings=emb).chosen
    lazy = select("deita", cands, Budget(300), embeddings=embed).chosen
    assert lazy == whole and len(lazy) == 300
    assert len(asked) == len(set(asked)) <= 1024  # two blocks of 512 of the 3000


def test_deita_needs_one_embedding_per_candidate():
    cands = [_cand("a", 1.0), _cand("b", 2.0)]
    with pytest.raises(ValueError, match="embedding"):
        select("deita", cands, Budget(1))
    with pytest.raises(ValueError, match="embeddings"):
        select("deita", cands, Budget(1), embeddings=np.ones((3, 4)))


def test_alpagasus_keeps_only_candidates_at_or_above_the_threshold():
    cands = [_cand("a", 95.0), _cand("b", 89.9), _cand("c", 90.0), _cand("d"), _cand("e", 99.0)]
    assert select("alpagasus", cands, Budget(10)).chosen == [4, 0, 2]
    assert select("alpagasus", cands, Budget(2)).chosen == [4, 0]
    assert select("alpagasus", cands, Budget(0), score_threshold=50.0).chosen == [4, 0, 2, 1]


def test_random_is_a_seeded_shuffle():
    cands = [_cand(f"i{i}", float(i)) for i in range(50)]
    first = select("random", cands, Budget(20), seed=1).chosen
    assert first == select("random", cands, Budget(20), seed=1).chosen
    assert first != select("random", cands, Budget(20), seed=2).chosen
    assert sorted(select("random", cands, Budget(0), seed=1).chosen) == list(range(50))


def test_longest_orders_by_response_length_then_item_id():
    cands = [
        _cand("b", 99.0, response="xx"),
        _cand("c", response="xxxxx"),
        _cand("a", response="xx"),
        _cand("d", 1.0, response="xxxx"),
    ]
    assert select("longest", cands, Budget(0)).chosen == [1, 3, 2, 0]


@pytest.mark.parametrize("method", ["tacos", "deita", "alpagasus", "random", "longest", "score"])
def test_every_method_under_a_tokens_budget_skips_what_does_not_fit(method):
    cands = [
        _cand("a", 99.0, tokens=50, response="x" * 9, cluster=0),
        _cand("b", 98.0, tokens=60, response="x" * 8, cluster=0),
        _cand("c", 97.0, tokens=10, response="x" * 7, cluster=0),
    ]
    emb = np.eye(3)
    picked = select(method, cands, Budget(65, "tokens"), embeddings=emb, score_threshold=0.0)
    assert picked.tokens <= 65
    if method != "random":
        assert picked.chosen == [0, 2]


def test_an_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown selection method"):
        select("best", [_cand("a", 1.0)], Budget(1))


def test_measure_counts_a_hand_made_selection():
    cands = [
        _cand("a", 80.0, tokens=100, response="x" * 10, cluster=0, tags=["math", "proof"]),
        _cand("b", 60.0, tokens=50, response="x" * 30, cluster=1, tags=["math"]),
        _cand("c", tokens=20, response="x" * 20, cluster=1, tags=["poetry"]),
        _cand("d", 10.0, tokens=5, response="x", cluster=-1),
    ]
    m = measure("score", [0, 1, 2, 3], cands)
    assert (m.method, m.records, m.tokens, m.unscored) == ("score", 4, 175, 1)
    assert m.mean_quality == pytest.approx(50.0)
    assert (m.clusters, m.tags) == (2, 3)
    assert m.mean_response_chars == pytest.approx(61 / 4)
    empty = measure("random", [], cands)
    assert (empty.records, empty.mean_quality, empty.mean_response_chars) == (0, None, 0.0)


def _planted_pool(seed: int) -> list[Candidate]:
    """Planted clusters: one big and nine small; in each, half the items are good and short,
    half bad and the longest of the pool."""
    rng = np.random.default_rng(seed)
    cands: list[Candidate] = []
    for cluster, size in enumerate([400] + [12] * 9):
        for j in range(size):
            good = j % 2 == 0
            length = rng.integers(100, 400) if good else rng.integers(2000, 4000)
            cands.append(
                Candidate(
                    item_id=f"t{cluster}-{j:03d}",
                    query=f"question {cluster}/{j}",
                    response_chars=int(length),
                    tokens=int(rng.integers(50, 200)),
                    judge_score=float(rng.integers(70, 101) if good else rng.integers(5, 31)),
                    tags=[f"topic{cluster}"],
                    cluster=cluster,
                )
            )
    return cands


def test_tacos_beats_random_and_longest_on_quality_and_coverage_of_planted_clusters():
    for seed in range(5):
        cands = _planted_pool(seed)
        budget = Budget(30)
        tacos = measure("tacos", select("tacos", cands, budget, rule="sqrt").chosen, cands)
        assert tacos.clusters == 10
        for method in ("random", "longest"):
            other = measure(method, select(method, cands, budget, seed=seed).chosen, cands)
            assert tacos.mean_quality is not None and other.mean_quality is not None
            assert tacos.mean_quality > other.mean_quality
            assert tacos.clusters > other.clusters


def test_references_are_each_clusters_closest_item_to_its_mean_lowest_index_on_ties() -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(300, 6)).astype(np.float32)
    vectors[10] = vectors[3]  # a tie: the lower index wins
    assignment = rng.integers(0, 6, size=300)
    assignment[assignment == 4] = 5  # cluster 4 is empty
    result = ClusterResult(assignment, [f"c{c}" for c in range(7)], [0] * 7)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = []
    for c in range(7):
        members = np.flatnonzero(assignment == c)
        if not members.size:
            expected.append(-1)
            continue
        mean = unit[members].sum(axis=0)
        score = np.round(unit[members] @ (mean / np.linalg.norm(mean)), 6)
        expected.append(int(members[np.flatnonzero(score == score.max())[0]]))
    assert references(result, vectors) == expected
    assert expected[4] == -1
