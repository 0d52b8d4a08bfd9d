"""Judge replies are checked for substance, not only shape: a rationale with no words, or
rubric aspects that contradict the overall score, is an invalid reply (asked again, then a
failure, counted as invalid); TACOS comparisons never send more calls than their share."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from services.judge.panel import Judge
from services.judge.rubric import ASPECTS
from services.judge.settings import JudgeSettings
from services.judge.verdicts import PROMPTS, PairVerdict, RubricVerdict, VerdictRules, checked
from taxoforge.llm import LLMClient
from taxoforge.llm.endpoints import Endpoint
from taxoforge.llm.types import ChatRequest, ChatResult
from taxoforge.prompts import load_template
from taxoforge.settings import LLMSettings
from taxoforge.v1 import common_pb2 as pb

CFG = pb.ModelConfig(model="default")


def _rubric(score: int, aspects: list[int], rationale: str = "Correct and complete.") -> str:
    reply: dict[str, Any] = dict(zip(ASPECTS, aspects, strict=True))
    return json.dumps({"rationale": rationale, **reply, "score": score})


def _pair(rationale: str, one: int = 70, two: int = 40) -> str:
    return json.dumps({"rationale": rationale, "score_1": one, "score_2": two})


# ---- the rationale ----


@pytest.mark.parametrize("rationale", ["][", "", "   ", "7", "...!?", "{}", "- -"])
def test_a_rationale_without_words_is_invalid(rationale: str) -> None:
    with pytest.raises(ValidationError, match="rationale"):
        PairVerdict.model_validate_json(_pair(rationale))
    with pytest.raises(ValidationError, match="rationale"):
        RubricVerdict.model_validate_json(_rubric(5, [5] * 5, rationale))


@pytest.mark.parametrize(
    "rationale", ["Answer 1 is right; answer 2 is not.", "很好", "ok", "Fine: 2 > 1."]
)
def test_a_rationale_with_words_in_any_script_is_valid(rationale: str) -> None:
    assert PairVerdict.model_validate_json(_pair(rationale)).rationale == rationale


# ---- aspects against the overall score ----


@pytest.mark.parametrize(
    ("score", "aspects"),
    [
        (1, [10, 10, 10, 10, 10]),  # every aspect at best, overall at worst
        (10, [1, 1, 1, 1, 1]),
        (4, [7, 8, 9, 7, 8]),  # 3 under the lowest aspect
        (10, [5, 6, 7, 4, 6]),  # 3 over the highest
    ],
)
def test_aspects_that_contradict_the_overall_score_are_invalid(
    score: int, aspects: list[int]
) -> None:
    with pytest.raises(ValidationError, match="contradicts"):
        RubricVerdict.model_validate_json(_rubric(score, aspects))


@pytest.mark.parametrize(
    ("score", "aspects"),
    [
        (2, [8, 1, 8, 8, 10]),  # one wrong fact pulls the overall down: sound
        (7, [6, 9, 8, 7, 10]),
        (5, [7, 7, 7, 7, 7]),  # within the tolerance of 2
        (9, [9, 9, 9, 9, 9]),  # identical scores are not invalid by themselves
    ],
)
def test_aspects_that_agree_with_the_overall_score_are_valid(
    score: int, aspects: list[int]
) -> None:
    assert RubricVerdict.model_validate_json(_rubric(score, aspects)).score == score


def test_the_tolerance_and_rationale_length_are_settings() -> None:
    rules = JudgeSettings(judge_aspect_tolerance=0, judge_min_rationale_letters=5).verdict_rules()
    strict = checked(RubricVerdict, rules)
    with pytest.raises(ValidationError, match="contradicts"):
        strict.model_validate_json(_rubric(6, [7] * 5))
    with pytest.raises(ValidationError, match="rationale"):
        strict.model_validate_json(_rubric(7, [7] * 5, "ok"))
    assert strict.model_validate_json(_rubric(7, [7] * 5)).score == 7
    assert JudgeSettings().verdict_rules() == VerdictRules(2.0, 2)
    # the same request whatever the rules: the name the model sees does not change
    assert strict.__name__ == "RubricVerdict"


# ---- through the real client: retried like a parse failure, then a failure ----


class _Scripted:
    """A transport answering with the given replies in turn (the last one repeats)."""

    def __init__(self, replies: list[str] | Callable[[ChatRequest], str]) -> None:
        self.replies = replies
        self.sent = 0

    async def chat(self, endpoint: Endpoint, req: ChatRequest, timeout_s: float) -> ChatResult:
        self.sent += 1
        if callable(self.replies):
            text = self.replies(req)
        else:
            text = self.replies[min(self.sent - 1, len(self.replies) - 1)]
        return ChatResult(text=text, prompt_tokens=40, completion_tokens=10)

    async def close(self) -> None:
        return None


def _client(monkeypatch: pytest.MonkeyPatch, transport: _Scripted) -> LLMClient:
    client = LLMClient(LLMSettings(structured_retries=3))
    monkeypatch.setattr(client, "_transport", lambda cfg: transport)
    return client


def _instruction() -> pb.Instruction:
    return pb.Instruction(text="What is the capital of France?", seed=pb.Seed(language="en"))


async def test_an_invalid_rationale_is_asked_again_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = _Scripted([_rubric(9, [9] * 5, "]["), _rubric(9, [9] * 5)])
    score = await Judge(_client(monkeypatch, transport)).score(
        _instruction(), pb.Response(id="i1.r0", text="Paris."), CFG
    )

    assert not score.failed and score.score == 9.0
    assert score.rationale == "Correct and complete."
    assert transport.sent == 2
    assert score.call.invalid_replies == 1 and score.call.usage.calls == 2


async def test_contradicting_replies_every_time_are_a_failure_not_a_score(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = _Scripted([_rubric(1, [10] * 5)])
    score = await Judge(_client(monkeypatch, transport)).score(
        _instruction(), pb.Response(id="i1.r0", text="Berlin, which is in Spain."), CFG
    )

    assert score.failed and score.score == 0.0
    assert "contradicts" in score.rationale
    assert score.call.invalid_replies == 3 and score.call.usage.calls == 3


# ---- TACOS comparisons: a ceiling on calls, retries included ----


def _samples() -> tuple[pb.Sample, pb.Sample]:
    return (
        pb.Sample(id="s1", query="Capital of France?", response="Paris."),
        pb.Sample(id="s0", query="Capital of Spain?", response="Madrid."),
    )


@pytest.mark.parametrize("max_calls", [2, 3, 5])
async def test_a_comparison_never_sends_more_than_its_calls(
    monkeypatch: pytest.MonkeyPatch, max_calls: int
) -> None:
    transport = _Scripted([_pair("][")])
    sample, reference = _samples()
    out = await Judge(_client(monkeypatch, transport)).compare_samples(
        sample, reference, CFG, "en", max_calls
    )

    assert transport.sent == max_calls
    assert out.failed and out.verdict == "tie"
    # what was sent is on the comparison: every call, every invalid reply
    assert sum(c.usage.calls for c in out.calls) == max_calls
    assert sum(c.invalid_replies for c in out.calls) == max_calls
    assert sum(c.usage.prompt_tokens for c in out.calls) == 40 * max_calls


async def test_a_retry_within_the_calls_rescues_the_comparison(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answered: dict[str, int] = {}

    def reply(req: ChatRequest) -> str:
        # the order showing the sample first is invalid once, then sound
        user = req.messages[-1]["content"]
        first = "Paris." in user.split("Sample 2")[0]
        answered[str(first)] = answered.get(str(first), 0) + 1
        if first and answered[str(first)] == 1:
            return _pair("][")
        return _pair("Sample 1 answers its request.", 80, 60)

    transport = _Scripted(reply)
    sample, reference = _samples()
    out = await Judge(_client(monkeypatch, transport)).compare_samples(
        sample, reference, CFG, "en", 3
    )

    assert not out.failed and transport.sent == 3
    assert sum(c.usage.calls for c in out.calls) == 3
    assert sum(c.invalid_replies for c in out.calls) == 1


async def test_without_a_limit_a_comparison_retries_as_the_client_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = _Scripted([_pair("][")])
    sample, reference = _samples()
    out = await Judge(_client(monkeypatch, transport)).compare_samples(sample, reference, CFG, "en")

    assert out.failed and transport.sent == 6  # 2 orders x 3 attempts
    assert sum(c.usage.calls for c in out.calls) == 6


# ---- the prompts ----


@pytest.mark.parametrize(
    ("name", "version"),
    [("rubric", "3"), ("pairwise", "2"), ("samples", "2"), ("contrastive", "2")],
)
def test_prompts_score_an_echo_or_a_non_attempt_one(name: str, version: str) -> None:
    template = load_template(PROMPTS / f"{name}.yaml")
    fields = dict.fromkeys(
        [
            "nonce",
            "language",
            "instruction",
            "response",
            "first",
            "second",
            "query_1",
            "response_1",
            "query_2",
            "response_2",
        ],
        "x",
    )
    text = " ".join(" ".join(m["content"].split()) for m in template.render(**fields))

    assert template.version == version  # recorded on every call: the change is traceable
    assert "only restates" in text and "does not attempt the task" in text
    assert "scores 1" in text
