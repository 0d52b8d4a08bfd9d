"""CodecLM contrastive filtering: strong vs target, both orders on 1-10, the gap decides."""

from __future__ import annotations

import random

import pytest
from judge_stub import ASKED_USAGE, StubLLM, by_order, judge_of, malformed_error, quality

from services.judge.panel import Panel
from services.judge.verdicts import RubricVerdict, TenVerdict
from taxoforge.llm import StructuredOutputError
from taxoforge.methods import MAX_SELF_RUBRICS_ROUNDS
from taxoforge.v1 import common_pb2 as pb

CFG = pb.ModelConfig(model="judge-model")


def _instruction(rounds: int = 1, version: int = 0) -> pb.Instruction:
    return pb.Instruction(
        job_id="job",
        item_id="i1",
        text="Plan a three-day trip to Kyoto on a student budget.",
        seed=pb.Seed(language="en", strategy="codeclm"),
        version=version,
        rounds=[pb.RubricRound(round=n + 1, action="add constraints") for n in range(rounds)],
    )


def _strong(n: int, index: int = 0) -> pb.Response:
    text = quality(n, f"Strong answer {index}.")
    return pb.Response(id=f"i1.r{index}", text=text, responder=index)


def _target(n: int) -> pb.Response:
    return pb.Response(id="i1.t", text=quality(n, "Target answer."), responder=-1)


# ---- Judge.contrastive ----


async def test_both_orders_are_asked_and_averaged() -> None:
    strong, target = _strong(8), _target(4)
    # strong first: 8 vs 4; target first: strong 7, target 6
    step = by_order(strong, target, a_first=(8, 4), b_first=(7, 6))
    llm = StubLLM([step, step])

    decision, calls = await judge_of(llm).contrastive(
        _instruction(version=2), strong, target, CFG, gap=3.0, rounds_left=True
    )

    assert llm.calls == 2
    assert llm.outputs == [TenVerdict, TenVerdict]  # CodecLM's 1-10 template
    firsts = sorted(u.index(strong.text) < u.index(target.text) for u in llm.users())
    assert firsts == [False, True]  # once each way round
    assert (decision.strong_score, decision.target_score) == (7.5, 5.0)
    assert decision.gap == 2.5
    assert decision.decision == "refine"
    assert (decision.strong_id, decision.target_id) == (strong.id, target.id)
    assert decision.version == 2
    assert [c.template for c in calls] == ["contrastive", "contrastive"]
    assert list(decision.calls) == calls
    assert all(c.usage == ASKED_USAGE for c in calls)


@pytest.mark.parametrize(
    ("strong", "target", "gap", "rounds_left", "decision"),
    [
        (9, 5, 3.0, True, "keep_strong"),  # G = 4 > 3
        (9, 5, 3.0, False, "keep_strong"),  # the last round does not matter when G is large
        (8, 5, 3.0, True, "refine"),  # G = 3 is not above the gap
        (8, 5, 3.0, False, "exhausted"),
        (5, 5, 3.0, True, "refine"),
        (2, 9, 3.0, True, "keep_target"),  # G = -7: the target was much better
        (5, 8, 3.0, False, "exhausted"),  # G = -3
        (9, 4, 5.0, True, "refine"),  # G = 5 within a gap of 5
        (10, 4, 5.0, True, "keep_strong"),
    ],
)
async def test_the_gap_decides(
    strong: int, target: int, gap: float, rounds_left: bool, decision: str
) -> None:
    out, _ = await judge_of(StubLLM()).contrastive(
        _instruction(), _strong(strong), _target(target), CFG, gap=gap, rounds_left=rounds_left
    )

    assert out.gap == strong - target
    assert out.decision == decision


async def test_both_orders_cancel_a_position_bias() -> None:
    # shown first gets +4: strong-first alone would read 10 vs 5 (keep); target-first 9 vs 6
    llm = StubLLM(bias=4)

    out, _ = await judge_of(llm).contrastive(
        _instruction(), _strong(6), _target(5), CFG, gap=3.0, rounds_left=True
    )

    assert (out.strong_score, out.target_score) == (8.0, 7.0)
    assert out.gap == 1.0
    assert out.decision == "refine"


async def test_a_malformed_contrastive_reply_raises() -> None:
    llm = StubLLM([malformed_error(output="TenVerdict"), malformed_error(output="TenVerdict")])

    with pytest.raises(StructuredOutputError):
        await judge_of(llm).contrastive(
            _instruction(), _strong(9), _target(2), CFG, gap=3.0, rounds_left=True
        )


# ---- Panel.run with contrastive filtering ----


async def _run(
    llm: StubLLM,
    *responses: pb.Response,
    rounds: int = 1,
    contrastive: bool = True,
    config: pb.JudgeConfig | None = None,
) -> pb.Judgment:
    candidates = pb.Candidates(instruction=_instruction(rounds), responses=responses)
    return await Panel(judge_of(llm)).run(
        candidates,
        CFG,
        config or pb.JudgeConfig(),
        min_margin=1.0,
        rng=random.Random(0),
        contrastive=contrastive,
    )


async def test_the_strong_answer_is_the_best_scored_responder_candidate() -> None:
    r0, r1, target = _strong(6, 0), _strong(9, 1), _target(4)
    llm = StubLLM()

    judgment = await _run(llm, r0, r1, target)

    assert judgment.contrastive.strong_id == r1.id
    assert judgment.contrastive.target_id == target.id
    assert judgment.contrastive.decision == "keep_strong"  # 9 - 4 > 3
    assert judgment.usable
    contrastive_prompts = llm.users(TenVerdict)
    assert len(contrastive_prompts) == 2
    for user in contrastive_prompts:
        assert r1.text in user and target.text in user
        assert r0.text not in user


async def test_a_failed_score_never_makes_the_strong_answer() -> None:
    broken, fine, target = _strong(10, 0), _strong(5, 1), _target(9)

    scores = [
        # no valid verdict, and a stray value left on it
        pb.Score(response_id=broken.id, score=10, failed=True),
        pb.Score(response_id=fine.id, score=5),
        pb.Score(response_id=target.id, score=9),
    ]
    candidates = pb.Candidates(instruction=_instruction(), responses=[broken, fine, target])
    judgment = await Panel(judge_of(StubLLM())).run(
        candidates, CFG, pb.JudgeConfig(), 1.0, random.Random(0), contrastive=True, scores=scores
    )

    assert judgment.contrastive.strong_id == fine.id
    assert judgment.contrastive.decision == "keep_target"  # 5 - 9 = -4


async def test_exhausted_makes_the_item_unusable_with_a_reason() -> None:
    llm = StubLLM()

    judgment = await _run(llm, _strong(9), _target(8), rounds=MAX_SELF_RUBRICS_ROUNDS)

    assert judgment.contrastive.decision == "exhausted"
    assert judgment.contrastive.gap == 1.0
    assert not judgment.usable
    reason = judgment.unusable_reason
    assert "contrastive gap 1.0" in reason
    assert "within 3" in reason
    assert f"after {MAX_SELF_RUBRICS_ROUNDS} Self-Rubrics rounds" in reason


async def test_refine_while_rounds_are_left_keeps_the_judgment_usable() -> None:
    judgment = await _run(StubLLM(), _strong(9), _target(8), rounds=MAX_SELF_RUBRICS_ROUNDS - 1)

    assert judgment.contrastive.decision == "refine"
    assert judgment.usable  # the worker sends the instruction back; nothing is dropped yet
    assert judgment.unusable_reason == ""


async def test_keep_target_is_recorded_and_usable() -> None:
    judgment = await _run(StubLLM(), _strong(3), _target(10))

    assert judgment.contrastive.decision == "keep_target"
    assert judgment.contrastive.gap == -7
    assert judgment.usable


async def test_the_configured_gap_is_used() -> None:
    config = pb.JudgeConfig(contrastive_gap=5.0)

    judgment = await _run(StubLLM(), _strong(9), _target(5), config=config, rounds=4)

    assert judgment.contrastive.decision == "exhausted"  # G = 4, not above 5
    assert "within 5" in judgment.unusable_reason


async def test_the_judgment_records_the_contrastive_calls_it_made() -> None:
    judgment = await _run(StubLLM(), _strong(9), _target(2))

    # every call is on the judgment (the job's report sums them): scores, then contrastive
    assert [s.call.template for s in judgment.scores] == ["rubric", "rubric"]
    assert [c.template for c in judgment.contrastive.calls] == ["contrastive"] * 2


async def test_no_contrastive_filtering_when_it_is_off() -> None:
    llm = StubLLM()

    judgment = await _run(llm, _strong(9), _target(2), contrastive=False)

    assert judgment.contrastive.decision == ""
    assert not judgment.HasField("contrastive")
    assert llm.outputs == [RubricVerdict, RubricVerdict]


async def test_no_contrastive_filtering_without_a_target_answer() -> None:
    llm = StubLLM()

    judgment = await _run(llm, _strong(9, 0), _strong(2, 1))

    assert not judgment.HasField("contrastive")
    assert TenVerdict not in llm.outputs


async def test_pairwise_mode_compares_only_responders_then_filters() -> None:
    r0, r1 = _strong(80, 0), _strong(40, 1)
    # contrastive prompts see the same texts; on its 1-10 scale the stub clamps 80/40 to 10
    target = pb.Response(id="i1.t", text=quality(2, "Target answer."), responder=-1)
    llm = StubLLM()

    judgment = await _run(llm, r0, r1, target, config=pb.JudgeConfig(mode="pairwise"))

    assert [(c.a_id, c.b_id) for c in judgment.comparisons] == [(r0.id, r1.id)]
    assert {s.response_id for s in judgment.scores} == {r0.id, r1.id}
    assert judgment.pair.chosen_id == r0.id
    assert judgment.contrastive.strong_id == r0.id
    assert judgment.contrastive.decision == "keep_strong"
    calls = [c for comparison in judgment.comparisons for c in comparison.calls]
    assert [c.template for c in calls + list(judgment.contrastive.calls)] == (
        ["pairwise"] * 2 + ["contrastive"] * 2
    )
