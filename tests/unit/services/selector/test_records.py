"""A judged item as an example: the conversation to teach, the preference pair, and their
metadata."""

from __future__ import annotations

import pytest

from services.judge.panel import build_judgment
from services.selector.records import example_of
from taxoforge.v1 import common_pb2 as pb


def _judgment(item: str, *scores: float, texts: list[str] | None = None, margin: float = 1.0):
    """A judged item with one response per score (ids ``<item>.r<n>``)."""
    texts = texts or [f"answer {n} to {item}" for n in range(len(scores))]
    seed = pb.Seed(node_id="physics", node_path="Science > Physics", language="en")
    instruction = pb.Instruction(
        job_id="job",
        item_id=item,
        seed=seed,
        text=f"question {item}",
        call=pb.LLMCall(model="gen", template="instruction", template_version="1"),
    )
    responses = [
        pb.Response(id=f"{item}.r{n}", text=text, call=pb.LLMCall(model=f"resp-{n}"))
        for n, text in enumerate(texts)
    ]
    score_msgs = [
        pb.Score(
            response_id=f"{item}.r{n}",
            score=s,
            rationale=f"why {n}",
            call=pb.LLMCall(model="judge"),
        )
        for n, s in enumerate(scores)
    ]
    candidates = pb.Candidates(instruction=instruction, responses=responses)
    return build_judgment(candidates, score_msgs, min_margin=margin)


# ---- the conversation to teach ----


def test_an_example_is_a_conversation_with_the_best_response() -> None:
    example = example_of(_judgment("i1", 4, 9, 6))

    assert example is not None
    assert example["id"] == "job/i1"
    assert example["item_id"] == "i1"
    assert example["shape"] == "generated"
    assert example["messages"] == [
        {"role": "user", "content": "question i1"},
        {"role": "assistant", "content": "answer 1 to i1"},
    ]
    assert example["query"] == "question i1"
    assert example["response"] == "answer 1 to i1"
    assert example["tokens"] > 0
    assert example["judge_score"] == 90  # rubric's 1-10 on 1-100
    assert (example["node"], example["language"]) == ("Science > Physics", "en")
    meta = example["metadata"]
    assert meta["response_id"] == "i1.r1"
    assert meta["response_model"] == "resp-1"
    assert meta["judge_rationale"] == "why 1"
    assert meta["instruction_template"] == "instruction@1"
    assert meta["node_path"] == "Science > Physics"
    assert [s["score"] for s in meta["verdicts"]["scores"]] == [4, 9, 6]


def test_an_example_skips_an_empty_best_response() -> None:
    example = example_of(_judgment("i1", 9, 5, 7, texts=["   ", "five", "seven"]))

    assert example is not None
    assert example["judge_score"] == 70
    assert example["response"] == "seven"


def test_no_example_when_every_response_is_empty() -> None:
    assert example_of(_judgment("i1", 9, 5, texts=["", "  \n"])) is None


def test_a_tie_goes_to_the_smaller_response_id() -> None:
    example = example_of(_judgment("i1", 8, 8))

    assert example is not None
    assert example["metadata"]["response_id"] == "i1.r0"


# ---- the preference pair ----


def test_the_preference_pair_has_trl_shape() -> None:
    example = example_of(_judgment("i1", 3, 9))

    assert example is not None
    assert example["prompt"] == [{"role": "user", "content": "question i1"}]
    assert example["chosen"] == [{"role": "assistant", "content": "answer 1 to i1"}]
    assert example["rejected"] == [{"role": "assistant", "content": "answer 0 to i1"}]
    assert example["score_chosen"] == 9
    assert example["score_rejected"] == 3
    assert example["margin"] == 6
    preference = example["metadata"]["preference"]
    assert preference["chosen_rationale"] == "why 1"
    assert preference["rejected_model"] == "resp-0"


def test_no_preference_pair_without_a_judged_pair() -> None:
    example = example_of(_judgment("i1", 5, 5))

    assert example is not None
    assert "chosen" not in example and "preference" not in example["metadata"]


# ---- usable, contrastive filtering and failed scores ----


def _codeclm(
    decision: str,
    strong: float | None = 6,
    target: float | None = 9,
    *,
    strong_text: str = "strong answer",
    mode: str = "rubric",
) -> pb.Judgment:
    """A judged CodecLM item: responder r0 (the strong answer) and the target t, with rubric
    scores (None: no score) and contrastive filtering's last round."""
    instruction = pb.Instruction(
        job_id="job",
        item_id="i1",
        text="question i1",
        seed=pb.Seed(language="en", strategy="codeclm"),
        version=1,
        contrastive=[pb.ContrastiveRound(version=0, gap=1.5, decision="refine")],
    )
    responses = [
        pb.Response(id="i1.r0", text=strong_text, responder=0, call=pb.LLMCall(model="strong")),
        pb.Response(id="i1.t", text="target answer", responder=-1, call=pb.LLMCall(model="tgt")),
    ]
    scores = [
        pb.Score(response_id=rid, score=s, rationale=f"why {rid}", call=pb.LLMCall(model="judge"))
        for rid, s in (("i1.r0", strong), ("i1.t", target))
        if s is not None
    ]
    judgment = build_judgment(
        pb.Candidates(instruction=instruction, responses=responses),
        scores,
        min_margin=1.0,
        config=pb.JudgeConfig(mode=mode),
    )
    judgment.contrastive.CopyFrom(
        pb.ContrastiveRound(
            version=1,
            strong_id="i1.r0",
            target_id="i1.t",
            strong_score=8.5,
            target_score=2.0,
            gap=6.5 if decision != "keep_target" else -6.5,
            decision=decision,
        )
    )
    if decision == "keep_target":
        judgment.contrastive.strong_score, judgment.contrastive.target_score = 2.0, 8.5
    return judgment


def test_the_strong_answer_contrastive_filtering_kept_is_taught() -> None:
    # the target has the higher rubric score, but contrastive filtering kept the strong answer
    example = example_of(_codeclm("keep_strong", strong=6, target=9))

    assert example is not None
    assert example["response"] == "strong answer"
    assert example["judge_score"] == 60
    assert example["metadata"]["response_id"] == "i1.r0"
    assert example["metadata"]["judge_rationale"] == "why i1.r0"


def test_the_target_answer_is_taught_on_keep_target() -> None:
    example = example_of(_codeclm("keep_target", strong=9, target=4))

    assert example is not None
    assert example["response"] == "target answer"
    assert example["judge_score"] == 40
    assert example["metadata"]["response_model"] == "tgt"


def test_a_kept_answer_without_a_score_takes_the_contrastive_score() -> None:
    # pairwise mode scores only the responders: the target has no Score of its own
    example = example_of(_codeclm("keep_target", strong=60, target=None, mode="pairwise"))

    assert example is not None
    assert example["response"] == "target answer"
    assert example["judge_score"] == 85  # the contrastive 1-10 score on pairwise mode's 1-100


@pytest.mark.parametrize("decision", ["refine", "exhausted", ""])
def test_without_a_keep_decision_the_best_scored_answer_is_taught(decision: str) -> None:
    example = example_of(_codeclm(decision, strong=6, target=9))

    assert example is not None
    assert example["response"] == "target answer"


def test_an_empty_kept_answer_falls_back_to_the_best_scored_one() -> None:
    example = example_of(_codeclm("keep_strong", strong=6, target=9, strong_text="  "))

    assert example is not None
    assert example["response"] == "target answer"


def test_failed_scores_are_never_the_best() -> None:
    judgment = _judgment("i1", 5, 4)
    judgment.scores[1].failed = True
    judgment.scores[1].score = 10  # a stray value on a failed score

    example = example_of(judgment)

    assert example is not None
    assert example["judge_score"] == 50
    assert example["metadata"]["response_id"] == "i1.r0"


def test_no_example_when_every_score_failed() -> None:
    judgment = _judgment("i1", 0, 0)
    for score in judgment.scores:
        score.failed = True

    assert example_of(judgment) is None


def test_a_kept_answer_with_a_failed_score_takes_the_contrastive_score() -> None:
    judgment = _codeclm("keep_target", strong=9, target=4)
    target = judgment.scores[1]
    target.Clear()
    target.response_id = "i1.t"
    target.failed = True
    target.rationale = "judge reply did not match RubricVerdict after 3 attempts"

    example = example_of(judgment)

    assert example is not None
    assert example["response"] == "target answer"
    assert example["judge_score"] == 85  # rubric mode: the contrastive 1-10 score, x10
    assert "did not match" not in example["metadata"]["judge_rationale"]


def test_metadata_has_the_judge_mode_and_aspects() -> None:
    judgment = _judgment("i1", 4, 9)
    judgment.scores[1].aspects.update({"helpfulness": 9, "correctness": 8, "honesty": 10})

    example = example_of(judgment)

    assert example is not None
    meta = example["metadata"]
    assert meta["judge_mode"] == "rubric"
    assert meta["aspects"] == {"helpfulness": 9, "correctness": 8, "honesty": 10}
    assert "contrastive" not in meta


def test_metadata_judge_mode_defaults_to_rubric_and_names_pairwise() -> None:
    old = _judgment("i1", 4, 9)
    old.mode = ""
    pairwise = _codeclm("", strong=80, target=None, mode="pairwise")

    old_example, pairwise_example = example_of(old), example_of(pairwise)

    assert old_example is not None and pairwise_example is not None
    assert old_example["metadata"]["judge_mode"] == "rubric"
    assert pairwise_example["metadata"]["judge_mode"] == "pairwise"
    assert pairwise_example["metadata"]["aspects"] == {}
    assert pairwise_example["judge_score"] == 80  # pairwise scores are on 1-100 already


def test_metadata_has_the_contrastive_history() -> None:
    example = example_of(_codeclm("keep_strong"))

    assert example is not None
    assert example["metadata"]["contrastive"] == [
        {"version": 0, "gap": 1.5, "decision": "refine"},
        {"version": 1, "gap": 6.5, "decision": "keep_strong"},
    ]
