"""Responder choice, and response writing with a stub model."""

from __future__ import annotations

import pytest
from generator_stub import (
    EN,
    FR,
    REFUSAL,
    Reply,
    StubLLM,
    make_recipe,
    make_seed,
    models_of,
    stamp_of,
    usage_is,
)

from services.generator.responses import ResponseWriter, responder_for
from taxoforge.errors import PermanentError
from taxoforge.v1 import common_pb2 as pb

# ---- responder_for ----


def test_responders_take_turns() -> None:
    models = models_of("r0", "r1", "r2")

    picks = [responder_for(models, c) for c in range(7)]

    assert [index for index, _ in picks] == [0, 1, 2, 0, 1, 2, 0]
    assert [cfg.model for _, cfg in picks] == ["r0", "r1", "r2", "r0", "r1", "r2", "r0"]


def test_without_responders_the_generator_answers() -> None:
    models = models_of()

    for candidate in range(3):
        index, cfg = responder_for(models, candidate)
        assert index == 0
        assert cfg.model == "gen"


# ---- ResponseWriter.response ----


def _instruction(language: str = "fr") -> pb.Instruction:
    return pb.Instruction(
        job_id="job", item_id="i0000003", seed=make_seed(language=language), text=FR[0]
    )


async def test_response_uses_the_candidate_responder() -> None:
    llm = StubLLM([f"  {FR[1]}  "])

    response = await ResponseWriter(llm).response(_instruction(), make_recipe(), candidate=3)  # type: ignore[arg-type]

    assert response.id == "i0000003.r3"
    assert response.text == FR[1]
    assert response.responder == 1
    assert response.language_ok
    assert list(response.rejections) == []
    assert stamp_of(response.call) == "response@1"
    usage_is(response.usage, 1)
    [call] = llm.calls
    assert call["model"] == "r1"
    assert call["role"] == "responders"
    prompt = StubLLM.text_of(call)
    assert FR[0] in prompt
    assert "French" in prompt


async def test_the_target_answers_as_responder_minus_one() -> None:
    llm = StubLLM([FR[1]])

    response = await ResponseWriter(llm).response(  # type: ignore[arg-type]
        _instruction(), make_recipe(), candidate=2, target=True
    )

    assert response.id == "i0000003.t"
    assert response.responder == -1
    [call] = llm.calls
    assert call["model"] == "tgt"
    assert call["role"] == "target"


async def test_candidates_are_sampled_with_different_seeds() -> None:
    llm = StubLLM([FR[1], FR[2]])
    generator = ResponseWriter(llm)  # type: ignore[arg-type]

    await generator.response(_instruction(), make_recipe(), candidate=0)
    await generator.response(_instruction(), make_recipe(), candidate=1)

    assert llm.calls[0]["seed"] != llm.calls[1]["seed"]


async def test_a_wrong_language_answer_is_asked_again() -> None:
    llm = StubLLM([EN[0], FR[1]])

    response = await ResponseWriter(llm).response(_instruction(), make_recipe(), candidate=0)  # type: ignore[arg-type]

    assert response.text == FR[1]
    assert response.language_ok
    assert [(r.reason, r.text) for r in response.rejections] == [("wrong_language", EN[0])]
    assert llm.calls[0]["seed"] != llm.calls[1]["seed"]
    usage_is(response.usage, 2)


async def test_wrong_language_every_time_is_kept_and_flagged() -> None:
    llm = StubLLM(EN[:3])

    response = await ResponseWriter(llm).response(_instruction(), make_recipe(), candidate=0)  # type: ignore[arg-type]

    assert response.text == EN[2]
    assert not response.language_ok
    assert [r.reason for r in response.rejections] == ["wrong_language"] * 3
    assert [r.text for r in response.rejections] == EN[:3]
    usage_is(response.usage, 3)


async def test_an_empty_answer_is_asked_again() -> None:
    llm = StubLLM(["  ", FR[1]])

    response = await ResponseWriter(llm).response(_instruction(), make_recipe(), candidate=0)  # type: ignore[arg-type]

    assert response.text == FR[1]
    assert response.language_ok
    assert [r.reason for r in response.rejections] == ["empty"]


async def test_no_answer_after_all_tries_raises() -> None:
    llm = StubLLM(["", " ", "\n"])

    with pytest.raises(PermanentError, match="no answer in 3 tries"):
        await ResponseWriter(llm).response(_instruction(), make_recipe(), candidate=0)  # type: ignore[arg-type]


async def test_a_wrong_language_answer_is_kept_when_the_last_try_is_empty() -> None:
    llm = StubLLM([EN[0], EN[1], ""])

    response = await ResponseWriter(llm).response(_instruction(), make_recipe(), candidate=0)  # type: ignore[arg-type]

    assert response.text in EN[:2]
    assert not response.language_ok


@pytest.mark.parametrize(
    ("language", "reply"),
    [
        ("fr", Reply("Je suis désolé, mais je ne peux pas répondre à cette question dangereuse.")),
        ("en", Reply(REFUSAL)),
        ("fr", Reply(FR[1] + " Ensuite, il faut considérer", "length")),
    ],
)
async def test_refusals_and_truncation_do_not_reject_a_response(
    language: str, reply: Reply
) -> None:
    llm = StubLLM([reply])

    response = await ResponseWriter(llm).response(  # type: ignore[arg-type]
        _instruction(language), make_recipe(), candidate=0
    )

    assert response.text == reply.text
    assert response.language_ok
    assert list(response.rejections) == []


async def test_response_language_check_can_be_switched_off() -> None:
    llm = StubLLM([EN[0]])

    response = await ResponseWriter(llm).response(  # type: ignore[arg-type]
        _instruction(), make_recipe(no_language_check=True), candidate=0
    )

    assert response.text == EN[0]
    assert response.language_ok


@pytest.mark.parametrize("no_cache", [False, True])
async def test_response_cache_flag_follows_no_cache(no_cache: bool) -> None:
    llm = StubLLM([FR[1]])

    await ResponseWriter(llm).response(_instruction(), make_recipe(no_cache=no_cache), candidate=0)  # type: ignore[arg-type]

    assert llm.calls[0]["cache"] is not no_cache
