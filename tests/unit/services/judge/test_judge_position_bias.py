"""Pairwise judging against a position-biased judge: both orders, inconsistency, policies."""

from __future__ import annotations

import random

import pytest
from judge_stub import QUALITY, StubLLM, by_order, judge_of, malformed_error, quality
from pydantic import BaseModel

from services.judge.panel import Panel, build_judgment
from services.judge.verdicts import PairVerdict
from taxoforge.v1 import common_pb2 as pb

CFG = pb.ModelConfig(model="judge-model")
INSTRUCTION = pb.Instruction(
    job_id="job", item_id="i1", text="Why are there tides?", seed=pb.Seed(language="en")
)
# A is truly better than B.
A = pb.Response(id="i1.r0", text=quality(70, "The Moon's pull on the oceans."), responder=0)
B = pb.Response(id="i1.r1", text=quality(60, "Because of the wind."), responder=1)


class FixedRandom(random.Random):
    """A random source whose draws are all ``value`` (picks the third call's order)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def _winner(c: pb.Comparison) -> str:
    return {"a": c.a_id, "b": c.b_id, "tie": "tie"}[c.verdict]


def _shown_order(user: str) -> list[int]:
    return [int(n) for n in QUALITY.findall(user)]


async def _compare(
    llm: StubLLM,
    first: pb.Response,
    second: pb.Response,
    config: pb.JudgeConfig | None = None,
    rng: random.Random | None = None,
) -> pb.Comparison:
    return await judge_of(llm).compare(
        INSTRUCTION, first, second, CFG, config or pb.JudgeConfig(), rng or random.Random(0)
    )


# ---- no_swap: one order, and the position decides ----


async def test_without_the_swap_a_biased_judge_prefers_whatever_is_shown_first() -> None:
    llm = StubLLM(bias=20)
    no_swap = pb.JudgeConfig(mode="pairwise", no_swap=True)

    a_first = await _compare(llm, A, B, no_swap)
    b_first = await _compare(llm, B, A, no_swap)

    assert _winner(a_first) == A.id
    assert _winner(b_first) == B.id  # though A is truly better
    assert llm.calls == 2  # one call per comparison
    for c in (a_first, b_first):
        assert not c.swapped
        assert not c.inconsistent
        assert (c.b_first_a, c.b_first_b) == (0, 0)
        assert len(c.calls) == 1
    assert (a_first.a, a_first.b) == (90, 60)
    assert (b_first.a, b_first.b) == (80, 70)


# ---- the swap: both orders, averaged ----


@pytest.mark.parametrize(("first", "second"), [(A, B), (B, A)])
async def test_with_the_swap_the_means_follow_the_true_quality(
    first: pb.Response, second: pb.Response
) -> None:
    llm = StubLLM(bias=20)

    c = await _compare(llm, first, second)

    assert c.swapped
    assert llm.calls == 2
    assert len(c.calls) == 2
    # the second call shows the other candidate first
    assert _shown_order(llm.users()[0])[0] != _shown_order(llm.users()[1])[0]
    means = {c.a_id: c.a, c.b_id: c.b}
    assert means == {A.id: 80, B.id: 70}  # true 70/60, each lifted by half the bias
    # the two orders preferred different answers: flagged, and no preference (default policy)
    assert c.inconsistent
    assert c.verdict == "tie"


@pytest.mark.parametrize(("first", "second"), [(A, B), (B, A)])
async def test_a_mildly_biased_judge_gives_the_true_verdict_in_both_orders(
    first: pb.Response, second: pb.Response
) -> None:
    c = await _compare(StubLLM(bias=5), first, second)

    assert not c.inconsistent
    assert _winner(c) == A.id


async def test_both_orders_are_recorded_on_the_comparison() -> None:
    c = await _compare(StubLLM(bias=20), A, B)

    assert (c.a_id, c.b_id) == (A.id, B.id)
    assert (c.a_first_a, c.a_first_b) == (90, 60)  # A shown first gets the bias
    assert (c.b_first_a, c.b_first_b) == (70, 80)  # B shown first gets it
    assert c.rationale_a_first == "shown first 70, second 60"
    assert c.rationale_b_first == "shown first 60, second 70"
    assert [call.template for call in c.calls] == ["pairwise", "pairwise"]
    assert all(call.usage.calls == 1 for call in c.calls)


async def test_pairwise_asks_for_a_1_to_100_verdict() -> None:
    llm = StubLLM()

    await _compare(llm, A, B)

    assert llm.outputs == [PairVerdict, PairVerdict]
    assert all(kw["cache"] is False for kw in llm.kwargs)


# ---- disagreement: orders that agree on the winner but not by how much ----


@pytest.mark.parametrize(
    ("b_first", "disagreement", "inconsistent"),
    [
        ((65, 60), 0, True),  # A by 40, then by 5: they differ by 35 > 30 (the default)
        ((60, 50), 0, False),  # A by 40, then by 10: exactly 30 apart, allowed
        ((65, 60), 40, False),  # 35 within a limit of 40
        ((65, 60), 20, True),
    ],
)
async def test_orders_differing_beyond_the_limit_are_inconsistent(
    b_first: tuple[int, int], disagreement: float, inconsistent: bool
) -> None:
    step = by_order(A, B, a_first=(90, 50), b_first=b_first)

    c = await _compare(StubLLM([step, step]), A, B, pb.JudgeConfig(disagreement=disagreement))

    assert c.inconsistent is inconsistent
    assert c.verdict == ("tie" if inconsistent else "a")


async def test_a_tie_in_one_order_is_not_a_contradiction() -> None:
    step = by_order(A, B, a_first=(70, 70), b_first=(80, 60))

    c = await _compare(StubLLM([step, step]), A, B)

    assert not c.inconsistent
    assert (c.a, c.b) == (75, 65)
    assert c.verdict == "a"


async def test_small_opposite_margins_are_inconsistent_even_within_the_limit() -> None:
    # A by 10 when shown first, B by 10 when shown first: a pure position effect
    step = by_order(A, B, a_first=(60, 50), b_first=(50, 60))

    c = await _compare(StubLLM([step, step]), A, B, pb.JudgeConfig(disagreement=50))

    assert (c.a, c.b) == (55, 55)
    assert c.inconsistent
    assert c.verdict == "tie"


# ---- policies for an inconsistent pair ----


@pytest.mark.parametrize("policy", ["", "tie"])
async def test_tie_policy_gives_no_preference(policy: str) -> None:
    llm = StubLLM(bias=20)

    c = await _compare(llm, A, B, pb.JudgeConfig(inconsistent=policy))

    assert c.inconsistent
    assert c.verdict == "tie"
    assert llm.calls == 2


@pytest.mark.parametrize(("draw", "shown_first", "winner"), [(0.1, A, A), (0.9, B, B)])
async def test_third_policy_makes_a_third_call_whose_verdict_decides(
    draw: float, shown_first: pb.Response, winner: pb.Response
) -> None:
    llm = StubLLM(bias=20)

    c = await _compare(llm, A, B, pb.JudgeConfig(inconsistent="third"), FixedRandom(draw))

    assert c.inconsistent
    assert llm.calls == 3
    assert len(c.calls) == 3
    # the random order of the third call; the biased judge prefers what it shows first
    assert _shown_order(llm.users()[2])[0] == int(QUALITY.findall(shown_first.text)[0])
    assert _winner(c) == winner.id
    # the means stay those of the two orders
    assert (c.a, c.b) == (80, 70)


def _truthful(messages: list[dict[str, str]], output: type[BaseModel]) -> BaseModel:
    first, second = _shown_order(messages[-1]["content"])
    return output.model_validate({"rationale": "fair", "score_1": first, "score_2": second})


@pytest.mark.parametrize("draw", [0.1, 0.9])
async def test_third_policy_follows_the_third_verdict_in_either_order(draw: float) -> None:
    # two contradicting orders, then an unbiased third look
    contradict = by_order(A, B, a_first=(95, 60), b_first=(65, 90))
    llm = StubLLM([contradict, contradict, _truthful])

    c = await _compare(llm, A, B, pb.JudgeConfig(inconsistent="third"), FixedRandom(draw))

    assert c.inconsistent
    assert llm.calls == 3
    assert _winner(c) == A.id


async def test_consistent_pairs_never_make_a_third_call() -> None:
    llm = StubLLM(bias=5)

    c = await _compare(llm, A, B, pb.JudgeConfig(inconsistent="third"))

    assert not c.inconsistent
    assert llm.calls == 2


def _pairwise_candidates(*responses: pb.Response) -> pb.Candidates:
    return pb.Candidates(instruction=INSTRUCTION, responses=responses)


async def test_drop_policy_makes_the_judgment_unusable() -> None:
    config = pb.JudgeConfig(mode="pairwise", inconsistent="drop")

    judgment = await Panel(judge_of(StubLLM(bias=20))).run(
        _pairwise_candidates(A, B), CFG, config, min_margin=1.0, rng=random.Random(0)
    )

    assert judgment.mode == "pairwise"
    assert [c.inconsistent for c in judgment.comparisons] == [True]
    assert judgment.comparisons[0].verdict == "tie"
    assert not judgment.usable
    assert "inconsistent" in judgment.unusable_reason
    assert "drop" in judgment.unusable_reason


async def test_drop_policy_keeps_a_consistent_judgment() -> None:
    config = pb.JudgeConfig(mode="pairwise", inconsistent="drop")

    judgment = await Panel(judge_of(StubLLM(bias=5))).run(
        _pairwise_candidates(A, B), CFG, config, min_margin=1.0, rng=random.Random(0)
    )

    assert judgment.usable
    assert judgment.unusable_reason == ""
    assert judgment.pair.chosen_id == A.id


async def test_tie_policy_keeps_the_item_but_gives_no_pair() -> None:
    config = pb.JudgeConfig(mode="pairwise", inconsistent="tie")

    judgment = await Panel(judge_of(StubLLM(bias=20))).run(
        _pairwise_candidates(A, B), CFG, config, min_margin=1.0, rng=random.Random(0)
    )

    assert judgment.usable
    assert not judgment.HasField("pair")  # means differ by 10, but the comparison is a tie


def test_build_judgment_drops_only_in_pairwise_mode_with_the_drop_policy() -> None:
    inconsistent = pb.Comparison(a_id=A.id, b_id=B.id, a=80, b=70, inconsistent=True)
    inconsistent.verdict = "tie"
    scores = [pb.Score(response_id=A.id, score=80), pb.Score(response_id=B.id, score=70)]
    candidates = _pairwise_candidates(A, B)

    def usable(config: pb.JudgeConfig | None) -> bool:
        return build_judgment(candidates, scores, 1.0, [inconsistent], config).usable

    assert not usable(pb.JudgeConfig(mode="pairwise", inconsistent="drop"))
    assert usable(pb.JudgeConfig(mode="pairwise", inconsistent="tie"))
    assert usable(pb.JudgeConfig(mode="pairwise", inconsistent="third"))
    assert usable(None)


# ---- a malformed comparison reply ----


async def test_a_reply_that_never_validates_is_a_failed_tie_never_a_score() -> None:
    llm = StubLLM([malformed_error(output="PairVerdict")])

    comparison = await _compare(llm, A, B)

    assert comparison.failed
    assert comparison.verdict == "tie"
    assert (comparison.a, comparison.b) == (0, 0)
    assert comparison.error
    assert sum(c.invalid_replies for c in comparison.calls) >= 3


async def test_a_comparison_fails_when_only_the_swapped_order_fails() -> None:
    def fail_when_b_is_first(messages: list[dict[str, str]], output: type[BaseModel]) -> BaseModel:
        user = messages[-1]["content"]
        if user.index(B.text) < user.index(A.text):
            raise malformed_error(output="PairVerdict")
        return output.model_validate({"rationale": "ok", "score_1": 80, "score_2": 60})

    llm = StubLLM([fail_when_b_is_first, fail_when_b_is_first])

    comparison = await _compare(llm, A, B)

    assert comparison.failed
    assert comparison.verdict == "tie"
    # the order that did answer was paid for and is told too
    assert len(comparison.calls) == 2


async def test_a_failing_comparison_is_left_out_of_the_pairwise_scores() -> None:
    bad = pb.Response(id="i1.r2", text="[malformed] answer", responder=2)
    config = pb.JudgeConfig(mode="pairwise")

    judgment = await Panel(judge_of(StubLLM())).run(
        _pairwise_candidates(A, B, bad), CFG, config, min_margin=1.0, rng=random.Random(0)
    )

    failed = [c for c in judgment.comparisons if c.failed]
    assert failed and all(bad.id in (c.a_id, c.b_id) for c in failed)
    scores = {s.response_id: s for s in judgment.scores}
    assert scores[bad.id].failed  # compared with no one: no score, not a zero
    assert not scores[A.id].failed and not scores[B.id].failed
    assert judgment.pair.chosen_id == A.id
