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

from services.generator.responses import CandidateFailure, ResponseWriter, responder_for
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


async def test_wrong_language_every_time_fails_the_candidate() -> None:
    # Was kept and flagged for the judge; now a degenerate answer never reaches the judge.
    llm = StubLLM(EN[:3])

    with pytest.raises(PermanentError, match=r"no usable answer in 3 tries \(wrong_language\)"):
        await ResponseWriter(llm).response(_instruction(), make_recipe(), candidate=0)  # type: ignore[arg-type]


async def test_an_empty_answer_is_asked_again() -> None:
    llm = StubLLM(["  ", FR[1]])

    response = await ResponseWriter(llm).response(_instruction(), make_recipe(), candidate=0)  # type: ignore[arg-type]

    assert response.text == FR[1]
    assert response.language_ok
    assert [r.reason for r in response.rejections] == ["empty"]


async def test_no_answer_after_all_tries_raises() -> None:
    llm = StubLLM(["", " ", "\n"])

    with pytest.raises(PermanentError, match="no usable answer in 3 tries"):
        await ResponseWriter(llm).response(_instruction(), make_recipe(), candidate=0)  # type: ignore[arg-type]


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


# ---- ResponseWriter.candidates: gates, redraws and what is discarded ----

FR_ANSWERS = [
    "Les objets tombent à la même vitesse dans le vide parce que la gravité accélère toutes "
    "les masses de la même façon, sans résistance de l'air.",
    "Dans le vide, aucune force de frottement ne s'oppose au mouvement : la seule force est le "
    "poids, proportionnel à la masse, donc l'accélération est identique.",
    "Galilée l'a montré : sans air, une plume et un marteau arrivent au sol ensemble, car "
    "l'accélération due à la pesanteur ne dépend pas de la masse.",
]


class Store:
    """The worker's exactly-once storage, in memory: each key part made once."""

    def __init__(self) -> None:
        self.made: dict[str, pb.Response] = {}

    async def __call__(self, part: str, write):  # type: ignore[no-untyped-def]
        if part not in self.made:
            self.made[part] = await write()
        return self.made[part]


async def test_an_echo_is_redrawn_and_listed_as_discarded() -> None:
    llm = StubLLM([FR[0], FR_ANSWERS[0], FR_ANSWERS[1]])
    store = Store()

    out = await ResponseWriter(llm).candidates(_instruction(), make_recipe(), store)  # type: ignore[arg-type]

    assert [r.text for r in out.responses] == FR_ANSWERS[:2]
    [dropped] = out.rejected
    assert (dropped.reason, dropped.candidate, dropped.attempt) == ("echo", "i0000003.r0", 0)
    assert dropped.text == FR[0]


async def test_the_second_of_two_near_identical_candidates_is_redrawn() -> None:
    same = FR_ANSWERS[0] + " !"
    llm = StubLLM([FR_ANSWERS[0], same, FR_ANSWERS[2]])
    store = Store()

    out = await ResponseWriter(llm, attempts=1).candidates(_instruction(), make_recipe(), store)  # type: ignore[arg-type]

    assert [r.text for r in out.responses] == [FR_ANSWERS[0], FR_ANSWERS[2]]
    [dropped] = out.rejected
    assert (dropped.reason, dropped.candidate) == ("near_identical", "i0000003.r1")
    assert "i0000003.r0" in dropped.detail
    # The redraw is stored under its own key and sampled with a new seed.
    assert set(store.made) == {"r0", "r1", "r1-d1"}
    assert len({c["seed"] for c in llm.calls}) == 3


async def test_a_redelivery_reuses_every_stored_draw() -> None:
    llm = StubLLM([FR[0], FR_ANSWERS[0], FR_ANSWERS[1]])
    store = Store()
    writer = ResponseWriter(llm)  # type: ignore[arg-type]
    first = await writer.candidates(_instruction(), make_recipe(), store)

    again = await writer.candidates(_instruction(), make_recipe(), store)

    assert again == first
    assert len(llm.calls) == 3


async def test_no_valid_candidate_fails_the_item_with_the_gate_reason() -> None:
    # r0 answers; r1 echoes its instruction at every attempt.
    llm = StubLLM([FR_ANSWERS[0]] + [FR[0]] * 3)

    with pytest.raises(CandidateFailure, match=r"i0000003\.r1 .*\(echo x3\)") as failure:
        await ResponseWriter(llm, attempts=3, redraws=0).candidates(  # type: ignore[arg-type]
            _instruction(), make_recipe(), Store()
        )

    assert isinstance(failure.value, PermanentError)
    assert [r.reason for r in failure.value.candidates.rejected].count("echo") == 3


async def test_a_response_leaking_the_prompt_or_looping_is_redrawn() -> None:
    looping = "La réponse est oui. " * 12
    leaking = FR_ANSWERS[2] + " <</instruction-0a1b2c3d4e5f>>"
    llm = StubLLM([looping, FR_ANSWERS[0], leaking, FR_ANSWERS[1]])

    out = await ResponseWriter(llm).candidates(_instruction(), make_recipe(), Store())  # type: ignore[arg-type]

    assert [r.text for r in out.responses] == FR_ANSWERS[:2]
    assert sorted(r.reason for r in out.rejected) == ["prompt_leak", "repetition"]
