"""The job report: item counts, judge health, Cohen's kappa, golden agreement, usage."""

from __future__ import annotations

import pytest

from services.judge.panel import Judge
from services.selector.report import (
    cohen_kappa,
    count_items,
    golden_agreement,
    judge_health,
    usage_of,
)
from taxoforge.llm import LLMClient
from taxoforge.llm.endpoints import Endpoint
from taxoforge.llm.types import ChatRequest, ChatResult
from taxoforge.settings import LLMSettings
from taxoforge.v1 import common_pb2 as pb


def _call(calls: int = 1, invalid: int = 0, tokens: int = 10) -> pb.LLMCall:
    return pb.LLMCall(
        invalid_replies=invalid,
        usage=pb.Usage(calls=calls, prompt_tokens=tokens, completion_tokens=1, cost_usd=0.5),
    )


def _score(rid: str, score: float, call: pb.LLMCall | None = None) -> pb.Score:
    return pb.Score(response_id=rid, score=score, call=call or _call())


def _failed(rid: str) -> pb.Score:
    return pb.Score(response_id=rid, failed=True, call=_call(calls=3, invalid=3))


def _round(decision: str, calls: int = 2) -> pb.ContrastiveRound:
    return pb.ContrastiveRound(decision=decision, calls=[_call() for _ in range(calls)])


# ---- count_items ----


def test_count_items_by_language_strategy_rejection_and_usability() -> None:
    def judgment(language: str, strategy: str = "", seed_strategy: str = "", **kw) -> pb.Judgment:
        seed = pb.Seed(language=language, strategy=seed_strategy)
        return pb.Judgment(
            instruction=pb.Instruction(seed=seed, strategy=strategy), usable=True, **kw
        )

    first = judgment("en", seed_strategy="glan")
    first.instruction.rejections.extend(
        [pb.Rejection(reason="duplicate"), pb.Rejection(reason="empty")]
    )
    first.responses.append(
        pb.Response(rejections=[pb.Rejection(reason="refused"), pb.Rejection(reason="empty")])
    )
    second = judgment("fr", strategy="codeclm", seed_strategy="glan")  # instruction's wins
    second.usable = False
    third = judgment("en")  # no strategy anywhere: tap
    third.responses.append(pb.Response(rejections=[pb.Rejection(reason="refused")]))
    report = pb.SelectionReport()

    count_items(report, [first, second, third])

    assert dict(report.by_language) == {"en": 2, "fr": 1}
    assert dict(report.by_strategy) == {"glan": 1, "codeclm": 1, "tap": 1}
    assert dict(report.rejections) == {
        "duplicate": 1,
        "empty": 1,
        "response_refused": 2,
        "response_empty": 1,
    }
    assert report.unusable == 1


# ---- judge_health ----


def _versions() -> tuple[list[pb.Judgment], list[pb.Judgment]]:
    """Two items: a rubric one judged twice (refined once), a pairwise one judged once."""
    refined = pb.Judgment(  # version 0, sent back: not final
        mode="rubric",
        scores=[_score("a.r0", 6), _failed("a.r1")],
        contrastive=_round("refine"),
    )
    rubric = pb.Judgment(  # version 1, final
        mode="rubric",
        scores=[_score("a.r0", 8), _failed("a.r1"), _score("a.r2", 3, _call(calls=2, invalid=1))],
        contrastive=_round("keep_strong"),
    )
    pairwise = pb.Judgment(
        mode="pairwise",
        scores=[pb.Score(response_id="b.r0", score=61.5), pb.Score(response_id="b.r1", score=64)],
        comparisons=[
            pb.Comparison(
                a_first_a=85, a_first_b=40, b_first_a=72, b_first_b=38, swapped=True,
                calls=[_call(), _call()],
            ),
            pb.Comparison(
                a_first_a=55, a_first_b=50, b_first_a=45, b_first_b=90, swapped=True,
                inconsistent=True, calls=[_call(), _call(calls=2, invalid=1), _call()],
            ),
        ],
        contrastive=_round("exhausted"),
    )  # fmt: skip
    return [rubric, pairwise], [refined, rubric, pairwise]


def test_judge_health_counts_calls_invalid_replies_and_the_parse_failure_rate() -> None:
    finals, versions = _versions()

    health = judge_health(finals, versions)

    # refined: 1 + 3 + 2 contrastive; rubric: 1 + 3 + 2 + 2; pairwise: 2 + 4 + 2
    assert health.calls == 6 + 8 + 8
    assert health.invalid_replies == 3 + 4 + 1
    # usage.calls counts every attempt, the invalid ones included
    assert health.parse_failure_rate == pytest.approx(8 / 22)


def test_judge_failures_are_counted_on_final_judgments_only() -> None:
    finals, versions = _versions()

    assert judge_health(finals, versions).judge_failures == 1


def test_comparisons_and_the_swap_disagreement_rate() -> None:
    finals, versions = _versions()

    health = judge_health(finals, versions)

    assert health.comparisons == 2
    assert health.inconsistent == 1
    assert health.swap_disagreement_rate == 0.5


def test_contrastive_counts() -> None:
    finals, versions = _versions()

    health = judge_health(finals, versions)

    assert health.contrastive_kept == 1
    assert health.contrastive_refined == 1  # counted over every judged version
    assert health.contrastive_exhausted == 1


def test_contrastive_kept_counts_both_kept_answers() -> None:
    finals = [pb.Judgment(contrastive=_round(d)) for d in ("keep_strong", "keep_target", "")]
    refined = [pb.Judgment(contrastive=_round("refine")) for _ in range(3)]

    health = judge_health(finals, [*refined, *finals])

    assert health.contrastive_kept == 2
    assert health.contrastive_refined == 3
    assert health.contrastive_exhausted == 0


def test_rubric_histogram_is_by_integer_score_and_skips_failures() -> None:
    finals = [
        pb.Judgment(mode="rubric", scores=[_score("r0", 8), _score("r1", 3), _failed("r2")]),
        pb.Judgment(mode="", scores=[_score("r0", 8), _score("r1", 10)]),  # "" is rubric
    ]

    health = judge_health(finals, finals)

    assert dict(health.histogram) == {8: 2, 3: 1, 10: 1}


def test_pairwise_histogram_is_by_buckets_of_ten_over_both_orders() -> None:
    finals, versions = _versions()

    health = judge_health(finals[1:], versions[2:])

    # 85 40 72 38 | 55 50 45 90: each order's raw scores; the means (61.5, 64) are not counted
    assert dict(health.histogram) == {80: 1, 70: 1, 50: 2, 40: 2, 30: 1, 90: 1}


def test_pairwise_histogram_counts_one_order_without_the_swap() -> None:
    once = pb.Comparison(a_first_a=91, a_first_b=9, swapped=False)

    health = judge_health([pb.Judgment(mode="pairwise", comparisons=[once])], [])

    assert dict(health.histogram) == {90: 1, 0: 1}


def test_judge_health_of_nothing_is_all_zero() -> None:
    health = judge_health([], [])

    assert health == pb.JudgeHealth()
    assert health.parse_failure_rate == 0.0
    assert health.swap_disagreement_rate == 0.0


class _InvalidJSON:
    """A transport whose every reply is not JSON."""

    async def chat(self, endpoint: Endpoint, req: ChatRequest, timeout_s: float) -> ChatResult:
        return ChatResult(text="I think it deserves a 7.", prompt_tokens=50, completion_tokens=8)

    async def close(self) -> None:
        return None


async def _failed_score_from_the_real_client(monkeypatch: pytest.MonkeyPatch) -> pb.Score:
    client = LLMClient(LLMSettings(structured_retries=3))
    monkeypatch.setattr(client, "_transport", lambda cfg: _InvalidJSON())
    instruction = pb.Instruction(text="Why?", seed=pb.Seed(language="en"))
    return await Judge(client).score(
        instruction, pb.Response(id="i1.r0", text="Because."), pb.ModelConfig(model="default")
    )


async def test_the_client_counts_every_attempt_in_usage_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    score = await _failed_score_from_the_real_client(monkeypatch)

    assert score.failed
    # three replies asked and paid for, all three invalid: usage.calls already includes them
    assert score.call.usage.calls == 3
    assert score.call.invalid_replies == 3
    assert score.call.usage.prompt_tokens == 150


async def test_a_judge_whose_every_reply_was_invalid_has_a_parse_failure_rate_of_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    score = await _failed_score_from_the_real_client(monkeypatch)
    judgment = pb.Judgment(mode="rubric", scores=[score])

    health = judge_health([judgment], [judgment])

    assert health.parse_failure_rate == 1.0


# ---- cohen_kappa ----


def test_kappa_of_perfect_agreement_is_one() -> None:
    labels = ["a", "b", "tie", "a", "b"]

    assert cohen_kappa(labels, labels) == 1.0
    assert cohen_kappa(["a"] * 4, ["a"] * 4) == 1.0  # one label only: no chance term to remove


def test_kappa_at_chance_level_is_zero() -> None:
    predicted = ["a", "a", "b", "b"] * 25
    labels = ["a", "b", "a", "b"] * 25  # independent of the prediction

    assert cohen_kappa(predicted, labels) == pytest.approx(0.0)


def test_kappa_of_systematic_disagreement_is_negative() -> None:
    assert cohen_kappa(["a", "b"] * 5, ["b", "a"] * 5) == pytest.approx(-1.0)


def test_kappa_two_label_worked_example() -> None:
    # 50 items: both "a" 20, (a, b) 5, (b, a) 10, both "b" 15.
    # observed 35/50 = 0.7; predicted a 25/50, labels a 30/50:
    # expected 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa (0.7 - 0.5) / (1 - 0.5) = 0.4
    predicted = ["a"] * 20 + ["a"] * 5 + ["b"] * 10 + ["b"] * 15
    labels = ["a"] * 20 + ["b"] * 5 + ["a"] * 10 + ["b"] * 15

    assert cohen_kappa(predicted, labels) == pytest.approx(0.4)


def test_kappa_three_label_worked_example() -> None:
    # observed 4/6; predicted a3 b2 tie1, labels a1 b3 tie2:
    # expected (3*1 + 2*3 + 1*2) / 36 = 11/36; kappa (24/36 - 11/36) / (25/36) = 13/25
    predicted = ["a", "a", "b", "b", "tie", "a"]
    labels = ["a", "b", "b", "b", "tie", "tie"]

    assert cohen_kappa(predicted, labels) == pytest.approx(0.52)


def test_kappa_of_no_items_is_zero_and_lengths_must_match() -> None:
    assert cohen_kappa([], []) == 0.0
    with pytest.raises(ValueError):
        cohen_kappa(["a", "b"], ["a"])


# ---- golden_agreement ----


def test_golden_agreement_sets_pairs_accuracy_and_kappa() -> None:
    health = pb.JudgeHealth(calls=7)

    golden_agreement(health, ["a", "b", "tie", "a"], ["a", "b", "b", "a"])

    assert health.golden_pairs == 4
    assert health.golden_accuracy == 0.75
    # expected (2*2 + 1*2) / 16 = 6/16; kappa (12/16 - 6/16) / (10/16) = 0.6
    assert health.golden_kappa == pytest.approx(0.6)
    assert health.calls == 7  # nothing else touched


def test_golden_agreement_without_golden_pairs() -> None:
    health = pb.JudgeHealth()

    golden_agreement(health, [], [])

    assert health.golden_pairs == 0
    assert health.golden_accuracy == 0.0
    assert health.golden_kappa == 0.0


# ---- usage_of ----


def _usage(n: int) -> pb.Usage:
    return pb.Usage(prompt_tokens=n, completion_tokens=n, cost_usd=n / 100, calls=1)


def test_usage_of_counts_every_record_once() -> None:
    instruction = pb.Instruction(usage=_usage(1))
    # what travels along inside a judgment must not be counted again
    instruction.contrastive.append(
        pb.ContrastiveRound(decision="refine", calls=[pb.LLMCall(usage=_usage(1000))])
    )
    response = pb.Response(id="r0", usage=_usage(2))
    score = pb.Score(response_id="r0", call=pb.LLMCall(usage=_usage(4)))
    version = pb.Judgment(
        instruction=instruction,
        responses=[response],
        scores=[score],
        comparisons=[
            pb.Comparison(calls=[pb.LLMCall(usage=_usage(8)), pb.LLMCall(usage=_usage(16))])
        ],
        contrastive=pb.ContrastiveRound(calls=[pb.LLMCall(usage=_usage(32))]),
    )

    total = usage_of([instruction], [response], [score], [version])

    assert total.prompt_tokens == 1 + 2 + 4 + 8 + 16 + 32
    assert total.completion_tokens == 63
    assert total.calls == 6
    assert total.cost_usd == pytest.approx(0.63)


def test_usage_of_sums_calls_over_versions() -> None:
    versions = [
        pb.Judgment(contrastive=pb.ContrastiveRound(calls=[pb.LLMCall(usage=_usage(3))]))
        for _ in range(3)
    ]

    total = usage_of([], [], [], versions)

    assert total.prompt_tokens == 9
    assert total.calls == 3


def test_usage_of_nothing_is_zero() -> None:
    assert usage_of([], [], [], []) == pb.Usage()
