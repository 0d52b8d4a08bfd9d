"""Panel.run in rubric and pairwise mode, and pairwise mode's pair (rank_pair)."""

from __future__ import annotations

import random

from judge_stub import StubLLM, judge_of, quality

from services.judge.pairwise import all_pairs, pairwise_scores, rank_pair
from services.judge.panel import Panel, build_judgment
from services.judge.verdicts import PairVerdict, RubricVerdict
from taxoforge.v1 import common_pb2 as pb

CFG = pb.ModelConfig(model="judge-model")
INSTRUCTION = pb.Instruction(
    job_id="job", item_id="i1", text="Name a prime.", seed=pb.Seed(language="en")
)
PAIRWISE = pb.JudgeConfig(mode="pairwise")


def _response(index: int, text: str) -> pb.Response:
    return pb.Response(id=f"i1.r{index}", text=text, responder=index)


async def _run(
    llm: StubLLM,
    *responses: pb.Response,
    config: pb.JudgeConfig | None = None,
    min_margin: float = 1.0,
) -> pb.Judgment:
    return await Panel(judge_of(llm)).run(
        pb.Candidates(instruction=INSTRUCTION, responses=responses),
        CFG,
        config or pb.JudgeConfig(),
        min_margin,
        random.Random(0),
    )


# ---- rubric mode ----


async def test_rubric_panel_scores_every_candidate_and_pairs_best_with_worst() -> None:
    llm = StubLLM()

    judgment = await _run(
        llm, _response(0, quality(6)), _response(1, quality(9)), _response(2, quality(3))
    )

    assert judgment.mode == "rubric"
    assert [s.score for s in judgment.scores] == [6, 9, 3]
    assert all(dict(s.aspects)["correctness"] == s.score for s in judgment.scores)
    assert (judgment.pair.chosen_id, judgment.pair.rejected_id) == ("i1.r1", "i1.r2")
    assert llm.outputs == [RubricVerdict] * 3
    assert judgment.usable


async def test_a_malformed_reply_becomes_a_failed_score_that_is_never_paired() -> None:
    judgment = await _run(
        StubLLM(),
        _response(0, quality(7)),
        _response(1, "[malformed] 2"),
        _response(2, quality(4)),
    )

    failed = [s for s in judgment.scores if s.failed]
    assert [s.response_id for s in failed] == ["i1.r1"]
    assert failed[0].call.invalid_replies == 3
    assert (judgment.pair.chosen_id, judgment.pair.rejected_id) == ("i1.r0", "i1.r2")


async def test_one_valid_score_and_a_failure_give_no_pair() -> None:
    judgment = await _run(StubLLM(), _response(0, quality(9)), _response(1, "[malformed]"))

    assert not judgment.HasField("pair")
    assert judgment.usable  # the valid answer still makes an SFT record


async def test_scores_given_replace_the_panels_own_rubric_calls() -> None:
    stored = [pb.Score(response_id="i1.r0", score=3), pb.Score(response_id="i1.r1", score=6)]

    llm = StubLLM()
    candidates = pb.Candidates(
        instruction=INSTRUCTION, responses=[_response(0, "a"), _response(1, "b")]
    )
    judgment = await Panel(judge_of(llm)).run(
        candidates, CFG, pb.JudgeConfig(), 1.0, random.Random(0), scores=stored
    )

    assert llm.calls == 0
    assert judgment.HasField("pair")
    assert [s.score for s in judgment.scores] == [3, 6]


# ---- pairwise mode ----


async def test_pairwise_panel_compares_every_pair_in_both_orders() -> None:
    llm = StubLLM()

    judgment = await _run(
        llm,
        _response(0, quality(80)),
        _response(1, quality(60)),
        _response(2, quality(40)),
        config=PAIRWISE,
    )

    assert judgment.mode == "pairwise"
    assert [(c.a_id, c.b_id) for c in judgment.comparisons] == [
        ("i1.r0", "i1.r1"),
        ("i1.r0", "i1.r2"),
        ("i1.r1", "i1.r2"),
    ]
    assert llm.calls == 6
    assert llm.outputs == [PairVerdict] * 6
    assert sum(len(c.calls) for c in judgment.comparisons) == 6  # each recorded on its pair
    assert {s.response_id: s.score for s in judgment.scores} == {
        "i1.r0": 80,
        "i1.r1": 60,
        "i1.r2": 40,
    }
    assert (judgment.pair.chosen_id, judgment.pair.rejected_id) == ("i1.r0", "i1.r2")
    assert judgment.pair.margin == 40


async def test_pairwise_panel_respects_the_margin() -> None:
    responses = (_response(0, quality(70)), _response(1, quality(60)))

    at = await _run(StubLLM(), *responses, config=PAIRWISE, min_margin=10)
    above = await _run(StubLLM(), *responses, config=PAIRWISE, min_margin=10.5)

    assert at.HasField("pair")
    assert not above.HasField("pair")


async def test_no_swap_lets_the_position_pick_the_pair_and_the_swap_refuses_it() -> None:
    worse, better = _response(0, quality(60)), _response(1, quality(70))  # worse shown first

    no_swap = await _run(
        StubLLM(bias=20), worse, better, config=pb.JudgeConfig(mode="pairwise", no_swap=True)
    )
    swapped = await _run(StubLLM(bias=20), worse, better, config=PAIRWISE)

    assert no_swap.pair.chosen_id == worse.id  # the bias made the pair
    assert swapped.comparisons[0].inconsistent
    assert not swapped.HasField("pair")


# ---- rank_pair ----


def _means(**by_id: float) -> list[pb.Score]:
    return [pb.Score(response_id=rid, score=s) for rid, s in by_id.items()]


def _comparison(a: str, b: str, verdict: str) -> pb.Comparison:
    return pb.Comparison(a_id=a, b_id=b, verdict=verdict)


def test_rank_pair_takes_best_and_worst_when_their_comparison_agrees() -> None:
    scores = _means(x=80, y=60, z=40)

    for comparison in (_comparison("x", "z", "a"), _comparison("z", "x", "b")):
        pair = rank_pair(scores, [comparison], min_margin=1.0)
        assert pair is not None
        assert (pair.chosen_id, pair.rejected_id) == ("x", "z")


def test_rank_pair_refuses_when_best_against_worst_is_a_tie() -> None:
    assert rank_pair(_means(x=80, z=40), [_comparison("x", "z", "tie")], 1.0) is None


def test_rank_pair_refuses_when_the_comparison_prefers_the_other() -> None:
    scores = _means(x=80, z=40)

    assert rank_pair(scores, [_comparison("x", "z", "b")], 1.0) is None
    assert rank_pair(scores, [_comparison("z", "x", "a")], 1.0) is None


def test_rank_pair_looks_only_at_the_best_against_worst_comparison() -> None:
    scores = _means(x=80, y=60, z=40)
    comparisons = [
        _comparison("x", "y", "tie"),
        _comparison("y", "z", "b"),
        _comparison("x", "z", "a"),
    ]

    pair = rank_pair(scores, comparisons, 1.0)

    assert pair is not None
    assert (pair.chosen_id, pair.rejected_id) == ("x", "z")


def test_rank_pair_keeps_the_margin_and_failed_rules() -> None:
    agrees = [_comparison("x", "z", "a")]

    assert rank_pair(_means(x=50, z=50), agrees, 0.0) is None
    assert rank_pair(_means(x=60, z=50), agrees, 10.5) is None
    failed = [pb.Score(response_id="x", score=90), pb.Score(response_id="z", failed=True)]
    assert rank_pair(failed, agrees, 1.0) is None


def test_build_judgment_in_pairwise_mode_uses_the_comparison_verdict() -> None:
    candidates = pb.Candidates(
        instruction=INSTRUCTION, responses=[_response(0, "x"), _response(1, "y")]
    )
    scores = _means(**{"i1.r0": 80, "i1.r1": 40})
    third_said_b = pb.Comparison(a_id="i1.r0", b_id="i1.r1", a=80, b=40, verdict="b")

    rubric = build_judgment(candidates, scores, 1.0, [third_said_b])
    pairwise = build_judgment(candidates, scores, 1.0, [third_said_b], PAIRWISE)

    assert rubric.HasField("pair")  # rubric mode pairs by score alone
    assert not pairwise.HasField("pair")


# ---- pairwise_scores and all_pairs ----


def test_pairwise_scores_average_each_candidates_comparisons() -> None:
    responses = [_response(n, "t") for n in range(3)]
    comparisons = [
        pb.Comparison(a_id="i1.r0", b_id="i1.r1", a=80, b=50),
        pb.Comparison(a_id="i1.r0", b_id="i1.r2", a=70, b=30),
    ]

    scores = {s.response_id: s for s in pairwise_scores(responses, comparisons)}

    assert scores["i1.r0"].score == 75
    assert scores["i1.r1"].score == 50
    assert scores["i1.r2"].score == 30
    assert not any(s.failed for s in scores.values())


def test_a_candidate_without_comparisons_has_a_failed_score() -> None:
    responses = [_response(0, "t"), _response(1, "t")]

    scores = pairwise_scores(responses, [])

    assert [s.failed for s in scores] == [True, True]


def test_all_pairs_is_every_unordered_pair_in_a_stable_order() -> None:
    responses = [_response(n, "t") for n in range(4)]

    pairs = [(a.id[-1], b.id[-1]) for a, b in all_pairs(responses)]

    assert pairs == [("0", "1"), ("0", "2"), ("0", "3"), ("1", "2"), ("1", "3"), ("2", "3")]
    assert all_pairs(responses[:1]) == []
