"""Instruction cleaning, responder choice, sampling seeds, and the Generator with a stub model."""

from __future__ import annotations

from typing import Any

import pytest

from services.generator.core import Generator, clean_instruction, responder_for, sampling_seed
from taxoforge.errors import PermanentError
from taxoforge.v1 import common_pb2 as pb

# ---- clean_instruction ----


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Question: What is entropy?", "What is entropy?"),
        ("question 3: What is entropy?", "What is entropy?"),
        ("**Question:** What is entropy?", "What is entropy?"),
        ("Q. What is entropy?", "What is entropy?"),
        ("Teacher: Explain how a lever works.", "Explain how a lever works."),
        ("Instruction - Explain how a lever works.", "Explain how a lever works."),
        ("Homework 2) Prove that sqrt(2) is irrational.", "Prove that sqrt(2) is irrational."),
    ],
)
def test_labels_are_removed(raw: str, clean: str) -> None:
    assert clean_instruction(raw) == clean


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ('"Why is the sky blue?"', "Why is the sky blue?"),
        ("'Why is the sky blue?'", "Why is the sky blue?"),
        ("\u201cWhy is the sky blue?\u201c", "Why is the sky blue?"),
        ('Teacher: "Explain gravity."', "Explain gravity."),
        ('  "  Why is the sky blue?  "  ', "Why is the sky blue?"),
    ],
)
def test_surrounding_quotes_are_removed(raw: str, clean: str) -> None:
    assert clean_instruction(raw) == clean


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("What is 2+2?\nAnswer: 4", "What is 2+2?"),
        ("Question: What is 2+2?\n\nAnswer: It is 4.", "What is 2+2?"),
        ("What is light?\nStudent: It is a wave.", "What is light?"),
        ("Explain entropy.\n**Solution:** It measures disorder.", "Explain entropy."),
        ("Explain entropy.\nA: It measures disorder.", "Explain entropy."),
    ],
)
def test_a_trailing_answer_is_dropped(raw: str, clean: str) -> None:
    assert clean_instruction(raw) == clean


@pytest.mark.parametrize(
    "question",
    [
        "What is the difference between weather and climate?",
        "Answer the following: why do leaves change colour in autumn?",
        "Describe the water cycle.\nInclude evaporation and condensation.",
        "Define the term 'question' as used in logic.",
    ],
)
def test_a_clean_question_is_left_alone(question: str) -> None:
    assert clean_instruction(question) == question


def test_whitespace_and_empty_replies() -> None:
    assert clean_instruction("  \n What is entropy?  \n") == "What is entropy?"
    assert clean_instruction("   ") == ""
    assert clean_instruction("Question:") == ""


def test_multiple_choice_options_are_kept() -> None:
    question = "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus"

    assert clean_instruction(question) == question


# ---- responder_for ----


def _models(*responder_models: str) -> pb.RoleModels:
    return pb.RoleModels(
        generator=pb.ModelConfig(model="gen"),
        responders=[pb.ModelConfig(model=m) for m in responder_models],
    )


def test_responders_take_turns() -> None:
    models = _models("r0", "r1", "r2")

    picks = [responder_for(models, c) for c in range(7)]

    assert [index for index, _ in picks] == [0, 1, 2, 0, 1, 2, 0]
    assert [cfg.model for _, cfg in picks] == ["r0", "r1", "r2", "r0", "r1", "r2", "r0"]


def test_without_responders_the_generator_answers() -> None:
    models = _models()

    for candidate in range(3):
        index, cfg = responder_for(models, candidate)
        assert index == 0
        assert cfg.model == "gen"


# ---- sampling_seed ----


def test_sampling_seed_is_deterministic() -> None:
    assert sampling_seed("job", "i0000001", "response", "0") == sampling_seed(
        "job", "i0000001", "response", "0"
    )


def test_sampling_seed_differs_per_part() -> None:
    seeds = {
        sampling_seed("job", "i0000001", "response", "0"),
        sampling_seed("job", "i0000001", "response", "1"),
        sampling_seed("job", "i0000002", "response", "0"),
        sampling_seed("job", "i0000001", "instruction", "0"),
        sampling_seed("other", "i0000001", "response", "0"),
    }

    assert len(seeds) == 5


def test_sampling_seed_fits_in_32_bits() -> None:
    for n in range(50):
        assert 0 <= sampling_seed("job", str(n)) < 2**32


# ---- Generator with a stub client ----


class StubLLM:
    """Replies from a script, recording the calls made."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.calls: list[dict[str, Any]] = []

    async def complete(
        self, role: str, cfg: pb.ModelConfig, messages: list[dict[str, str]], **kwargs: Any
    ) -> tuple[str, pb.LLMCall]:
        self.calls.append({"role": role, "model": cfg.model, "messages": messages, **kwargs})
        call = pb.LLMCall(role=role, model=cfg.model)
        call.usage.prompt_tokens = 10
        call.usage.completion_tokens = 5
        call.usage.calls = 1
        return self.replies.pop(0), call


def _seed() -> pb.Seed:
    return pb.Seed(
        job_id="job",
        item_id="i0000003",
        node_id="physics",
        node_title="Physics",
        node_path="Natural Sciences > Physics",
        node_description="Forces and motion.",
        language="fr",
    )


async def test_instruction_is_cleaned_and_stamped() -> None:
    llm = StubLLM(["Question: Qu'est-ce que l'inertie ?\nAnswer: ..."])
    generator = Generator(llm)  # type: ignore[arg-type]

    instruction = await generator.instruction(_seed(), pb.ModelConfig(model="gen"))

    assert instruction.text == "Qu'est-ce que l'inertie ?"
    assert instruction.item_id == "i0000003"
    assert instruction.seed.node_id == "physics"
    assert instruction.call.template == "instruction"
    assert instruction.call.template_version == "1"
    prompt = "\n".join(m["content"] for m in llm.calls[0]["messages"])
    assert "French" in prompt
    assert "Natural Sciences > Physics" in prompt


async def test_empty_instructions_are_retried_and_usage_adds_up() -> None:
    llm = StubLLM(["", "Question:", "Why do objects fall?"])
    generator = Generator(llm, instruction_attempts=3)  # type: ignore[arg-type]

    instruction = await generator.instruction(_seed(), pb.ModelConfig(model="gen"))

    assert instruction.text == "Why do objects fall?"
    assert instruction.call.usage.calls == 3
    assert instruction.call.usage.prompt_tokens == 30
    # each attempt samples with its own seed
    assert len({c["seed"] for c in llm.calls}) == 3


async def test_no_usable_instruction_fails_the_item() -> None:
    llm = StubLLM(["", "  ", "**Question:**"])
    generator = Generator(llm, instruction_attempts=3)  # type: ignore[arg-type]

    with pytest.raises(PermanentError, match="no usable instruction in 3 tries"):
        await generator.instruction(_seed(), pb.ModelConfig(model="gen"))


async def test_response_uses_the_candidate_responder() -> None:
    llm = StubLLM(["  Because of gravity.  "])
    generator = Generator(llm)  # type: ignore[arg-type]
    instruction = pb.Instruction(
        job_id="job", item_id="i0000003", seed=_seed(), text="Why do objects fall?"
    )

    response = await generator.response(instruction, _models("r0", "r1"), candidate=3)

    assert response.id == "i0000003.r3"
    assert response.text == "Because of gravity."
    assert response.responder == 1
    assert llm.calls[0]["model"] == "r1"
    assert response.call.template == "response"
