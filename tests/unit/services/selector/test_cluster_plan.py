"""The cluster step's plan without a bus: which samples comparative scoring compares."""

from __future__ import annotations

from services.selector.cluster_plan import ClusterPlan, comparison_calls, comparison_plan
from services.selector.examples import Candidate
from services.selector.methods.clusters import cluster_by_key, references
from taxoforge.v1 import common_pb2 as pb


def _cands(nodes: list[str]) -> list[Candidate]:
    return [
        Candidate(item_id=f"i{i}", query="q", response_chars=1, tokens=10, node=node)
        for i, node in enumerate(nodes)
    ]


def test_judge_scoring_compares_nothing() -> None:
    cands = _cands(["a", "a", "b"])
    result = cluster_by_key([c.node for c in cands])
    spec = pb.SelectionSpec(scoring="judge")
    assert comparison_plan(spec, cands, result, references(result, None, 1)) == []


def test_without_budgets_every_sample_but_the_references_is_compared() -> None:
    cands = _cands(["a", "a", "a", "b", "b"])
    result = cluster_by_key([c.node for c in cands])
    refs = references(result, None, 1)
    spec = pb.SelectionSpec(scoring="comparative", quota="proportional")
    compared = comparison_plan(spec, cands, result, refs)
    assert sorted([*compared, *refs]) == list(range(5))


def test_the_comparison_budget_is_shared_by_the_records_budget_quotas() -> None:
    cands = _cands(["a"] * 6 + ["b"] * 2)
    result = cluster_by_key([c.node for c in cands])
    refs = references(result, None, 1)
    spec = pb.SelectionSpec(
        scoring="comparative",
        quota="equal",
        budget=2,
        budget_unit="records",
        comparison_budget=6,
        seed=3,
    )
    compared = comparison_plan(spec, cands, result, refs)
    # 2 comparisons (2 judge calls and a retry each), one per cluster: equal quotas.
    assert len(compared) == 2
    assert {int(result.assignment[i]) for i in compared} == {0, 1}
    assert not set(compared) & set(refs)


def test_the_plan_file_lists_items_in_candidate_order() -> None:
    cands = _cands(["a", "b"])
    plan = ClusterPlan([0, 1], ["a", "b"], ["i0", "i1"], [[], []], [])
    assert plan.to_json(cands)["items"] == ["i0", "i1"]


def test_every_comparisons_calls_retries_included_fit_the_budget() -> None:
    for size in (3, 8, 40):
        cands = _cands(["a"] * size + ["b"] * size)
        result = cluster_by_key([c.node for c in cands])
        refs = references(result, None, 1)
        for budget in (1, 2, 3, 5, 20, 41):
            spec = pb.SelectionSpec(scoring="comparative", comparison_budget=budget, seed=1)
            compared = comparison_plan(spec, cands, result, refs, spare_calls=1)
            each, rule = comparison_calls(budget, len(compared))
            # the ceiling: however many retries, the planned calls stay within the budget
            assert len(compared) * each <= budget
            if compared:
                assert each >= 2 and str(budget) in rule
            # when the budget pays for a retry, every comparison gets one
            if budget >= 3 and len(compared) > 0:
                assert each >= 3


def test_without_a_budget_comparisons_have_no_call_limit() -> None:
    assert comparison_calls(0, 10)[0] == 0
