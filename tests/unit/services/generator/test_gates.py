"""The quality gates a draft must pass: not empty, not cut off, not a refusal, in its language."""

from __future__ import annotations

import pytest

from services.generator.gates import check_draft, looks_refused
from taxoforge.v1 import common_pb2 as pb

FRENCH = (
    "Expliquez pourquoi le ciel est bleu pendant la journée et rouge au coucher du soleil, "
    "en vous appuyant sur la diffusion de la lumière."
)
ENGLISH = (
    "Explain why the sky is blue during the day and red at sunset, using what you know about "
    "how sunlight is scattered by the atmosphere."
)


def _check(
    text: str,
    finish_reason: str = "stop",
    language: str = "en",
    check_lang: bool = True,
    **switches: bool,
) -> pb.Rejection | None:
    return check_draft(text, finish_reason, language, check_lang, **switches)


def test_a_good_draft_passes() -> None:
    assert _check(ENGLISH) is None
    assert _check(FRENCH, language="fr") is None


# ---- empty ----


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_empty_drafts_are_turned_down(text: str) -> None:
    rejection = _check(text)

    assert rejection is not None
    assert rejection.reason == "empty"
    assert rejection.text == text


def test_empty_comes_before_truncated() -> None:
    rejection = _check("", finish_reason="length")

    assert rejection is not None
    assert rejection.reason == "empty"


# ---- truncated ----


def test_a_draft_cut_at_the_token_limit_is_truncated() -> None:
    text = "Explain the three laws of thermodynamics and give for each"

    rejection = _check(text, finish_reason="length")

    assert rejection is not None
    assert rejection.reason == "truncated"
    assert rejection.text == text
    assert "token limit" in rejection.detail


def test_truncation_check_can_be_switched_off() -> None:
    assert _check(ENGLISH, finish_reason="length", truncation=False) is None


# ---- refused ----


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that request.",
        "Im sorry, I cannot do that.",
        "I am sorry, this is not something I can write.",
        "Sorry, I can't write that question.",
        "I can't help with that.",
        "I cannot produce this content.",
        "I'm not able to create that.",
        "I am unable to comply.",
        "As an AI, I do not write homework.",
        "As an AI language model, I cannot do this.",
        "As a language model I won't do that.",
        "I won't write that.",
        "  i'm SORRY, no.",
        "Je suis désolé, mais je ne peux pas répondre à cette demande.",
        "Je ne peux pas écrire cette question.",
        "Lo siento, no puedo ayudar con eso.",
        "No puedo escribir esa pregunta.",
        "Es tut mir leid, das kann ich nicht.",
        "Ich kann nicht helfen.",
        "Mi dispiace, non posso farlo.",
        "Desculpe, não posso ajudar.",
    ],
)
def test_refusals_are_turned_down(text: str) -> None:
    assert looks_refused(text)

    rejection = _check(text, check_lang=False)

    assert rejection is not None
    assert rejection.reason == "refused"
    assert rejection.text == text


@pytest.mark.parametrize(
    "text",
    [
        "Explain why people say 'I'm sorry' so often in British English.",
        "Write a short story in which a robot learns to say sorry.",
        "Sorrow in Romantic poetry: how does Keats express it?",
        "Imagine you are a judge: I cannot decide, so weigh both arguments.",
    ],
)
def test_requests_that_merely_mention_an_apology_pass(text: str) -> None:
    assert not looks_refused(text)
    assert _check(text) is None


def test_refusal_check_can_be_switched_off() -> None:
    assert _check("I'm sorry, I can't help with that.", refusals=False) is None


@pytest.mark.parametrize(
    "text",
    ["I\u2019m sorry, but I can\u2019t help with that.", "I can\u2019t help with that request."],
)
def test_refusals_with_typographic_apostrophes_are_turned_down(text: str) -> None:
    assert looks_refused(text)


@pytest.mark.parametrize(
    "text",
    [
        "As an airline passenger, what are my rights when a flight is cancelled?",
        "As an aid worker in a flood zone, how should I prioritise water purification?",
    ],
)
def test_persona_requests_starting_with_as_an_ai_letters_pass(text: str) -> None:
    assert not looks_refused(text)


def test_french_refusal_starting_with_desole_is_turned_down() -> None:
    assert looks_refused("Désolé, je ne peux pas vous aider avec cette demande.")


# ---- language ----


def test_an_english_paragraph_when_french_is_asked_is_wrong_language() -> None:
    rejection = _check(ENGLISH, language="fr")

    assert rejection is not None
    assert rejection.reason == "wrong_language"
    assert rejection.text == ENGLISH
    assert rejection.detail.startswith("asked fr, looks like en")


def test_language_check_can_be_switched_off() -> None:
    assert _check(ENGLISH, language="fr", check_lang=False) is None


def test_no_asked_language_means_no_language_check() -> None:
    assert _check(FRENCH, language="") is None


def test_short_texts_pass_the_language_check() -> None:
    assert _check("Why is the sky blue?", language="fr") is None


def test_code_passes_the_language_check() -> None:
    code = (
        "```python\n"
        "def running_average(values):\n"
        "    # returns the average of all values seen so far, for every position\n"
        "    total = 0\n"
        "    return [(total := total + v) / (i + 1) for i, v in enumerate(values)]\n"
        "```"
    )

    assert _check(code, language="fr") is None


def test_refusal_is_reported_before_language() -> None:
    rejection = _check("I'm sorry, but I can't help with writing that question.", language="fr")

    assert rejection is not None
    assert rejection.reason == "refused"
