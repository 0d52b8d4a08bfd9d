"""The cheap checks in front of the degenerate-record gates' costly ones: they skip only what
could not match, so every verdict stays what the costly check alone gives."""

from __future__ import annotations

import re
from typing import Any

import pytest

from taxoforge import degenerate
from taxoforge.degenerate import echo, no_answer, not_a_request

# One text per branch of the assistant's-offer pattern, in every language it knows.
OFFERS = [
    "I'm ready to help you with that.",
    "How can I help you today?",
    "I'd be happy to assist.",
    "I can certainly help you with this.",
    "Let me know if you need more.",
    "I'll gladly provide the details.",
    "Feel free to ask anything.",
    "What would you like me to do?",
    "Je suis prête à vous aider.",
    "Comment puis-je vous aider ?",
    "Je peux vous aider.",
    "N'hésitez pas à demander.",
    "Ich bin gerne bereit, Ihnen zu helfen.",
    "Ich helfe Ihnen gern.",
    "Wie kann ich Ihnen helfen?",
    "Ich würde Ihnen gerne helfen.",
    "Zögern Sie nicht, mich zu fragen.",
    "Estoy lista para ayudar.",
    "¿En qué puedo ayudar?",
    "Puedo ayudarte con eso.",
    "No dudes en preguntar.",
    "Sono pronto ad aiutarti.",
    "Come posso esserti utile?",
    "Estou pronta para ajudar.",
    "Como posso te ajudar?",
    "我很乐意帮助你。",
    "有什么可以帮您的吗\uff1f",
    "请随时提问。",
    "お手伝いします。",
    "HOW CAN I HELP?",
]
LINKS = [
    "Please go to the following link.",
    "Click here to open the website.",
    "Visit our web site for the rest.",
    "Consultez la page suivante.",
    "Besuchen Sie die Webseite.",
    "Visita el sitio oficial.",
    "Haz clic en la página.",
    "请访问这个链接。",
]


@pytest.mark.parametrize("text", OFFERS)
def test_every_offer_holds_a_word_the_prefilter_looks_for(text: str) -> None:
    assert degenerate._OFFER.search(text) is not None
    assert degenerate._OFFER_WORDS.search(text) is not None
    assert degenerate._offer(text) is not None


def _top_level_branches(pattern: str) -> list[str]:
    branches, depth, current, escaped = [], 0, "", False
    for ch in pattern:
        if not escaped and ch == "(":
            depth += 1
        elif not escaped and ch == ")":
            depth -= 1
        if not escaped and ch == "|" and depth == 0:
            branches.append(current)
            current = ""
        else:
            current += ch
        escaped = not escaped and ch == "\\"
    return [*branches, current]


def test_every_offer_branch_starts_where_the_start_check_lets_a_search_in() -> None:
    # The start check turns a position away unless a branch can begin there: a Latin branch
    # must open with a word boundary and a letter of its set, a CJK one with a character of its.
    branches = _top_level_branches(degenerate._OFFER_BRANCHES)
    assert len(branches) == len(OFFERS) - 1  # one text per branch, and one in capitals
    latin, cjk = re.findall(r"\[(.*?)\]", degenerate._OFFER_STARTS)
    for branch in branches:
        rest = branch.removeprefix("\\b")
        if rest.startswith("(?:"):  # a group first: its alternatives' first characters
            depth, end = 0, 0
            while True:
                depth += {"(": 1, ")": -1}.get(rest[end], 0)
                if depth == 0:
                    break
                end += 1
            firsts = {alt[0] for alt in _top_level_branches(rest[3:end])}
        else:
            firsts = {rest[0]}
        if branch.startswith("\\b"):
            assert firsts <= set(latin), (branch, firsts)
        else:
            assert firsts <= set(cjk), (branch, firsts)


def test_every_offer_word_starts_where_its_start_check_lets_a_search_in() -> None:
    (starts,) = re.findall(r"\[(.*?)\]", degenerate._OFFER_WORD_STARTS)
    for word in degenerate._OFFER_WORD_LIST.split("|"):
        assert word[0] in starts, word


ANSWERS = [
    "Photosynthesis converts light energy into chemical energy. In this answer I will provide "
    "an overview of the light reactions. The support of chlorophyll is essential.",
    "To answer your question, mitochondria make ATP through oxidative phosphorylation, which "
    "helps generate a proton gradient. We are here to assist you with more.",
    "Sure! Here is a response that will guide you. how may we be of use? je suis là pour vous "
    "aider, xi am ready to help, ai'm happy to answer.",
]


@pytest.mark.parametrize("text", [*OFFERS, *LINKS, *ANSWERS])
def test_the_start_check_finds_what_the_branches_alone_find(text: str) -> None:
    plain = re.compile(degenerate._OFFER_BRANCHES, re.IGNORECASE)
    for variant in (text, text.upper(), f"x{text} {text}"):
        expected = plain.search(variant)
        found = degenerate._OFFER.search(variant)
        assert (found and found.span()) == (expected and expected.span()), variant
        words = re.compile(degenerate._OFFER_WORD_LIST, re.IGNORECASE).search(variant)
        found_word = degenerate._OFFER_WORDS.search(variant)
        assert (found_word and found_word.span()) == (words and words.span()), variant


@pytest.mark.parametrize("text", LINKS)
def test_every_link_pointer_holds_a_word_the_prefilter_looks_for(text: str) -> None:
    assert degenerate._LINK.search(text) is not None
    assert degenerate._LINK_WORDS.search(text) is not None
    assert not_a_request(text) is not None


class _Counting:
    """A compiled pattern that counts its searches."""

    def __init__(self, inner: re.Pattern[str]) -> None:
        self.inner = inner
        self.searched: list[str] = []

    def search(self, text: str) -> Any:
        self.searched.append(text)
        return self.inner.search(text)

    def match(self, text: str) -> Any:
        return self.inner.match(text)


def test_a_text_with_none_of_the_words_is_not_searched_for_offers_or_links(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    offer, link = _Counting(degenerate._OFFER), _Counting(degenerate._LINK)
    monkeypatch.setattr(degenerate, "_OFFER", offer)
    monkeypatch.setattr(degenerate, "_LINK", link)
    text = "Compare two ways to study the river network and say which one you would choose."

    assert not_a_request(text) is None
    assert no_answer(text) is None
    assert offer.searched == [] and link.searched == []
    # With one of the words, the pattern decides.
    assert not_a_request("How can I help you with the river network?") is not None
    assert offer.searched


def test_a_response_without_enough_of_the_instructions_words_is_not_aligned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    aligned: list[list[str]] = []
    covered = degenerate._covered

    def counting(source: list[str], target: list[str]) -> list[bool]:
        aligned.append(source)
        return covered(source, target)

    monkeypatch.setattr(degenerate, "_covered", counting)
    instruction = "Explain why the sky is blue during the day and red at sunset."

    assert echo(instruction, "Rayleigh scattering favours short wavelengths of light.") is None
    assert aligned == []
    # A restatement is still aligned, and found.
    assert echo(instruction, instruction) is not None
    assert aligned


def test_a_short_response_is_searched_for_an_offer_once(monkeypatch: pytest.MonkeyPatch) -> None:
    offer = _Counting(degenerate._OFFER)
    monkeypatch.setattr(degenerate, "_OFFER", offer)

    # Holds "answer" (a word of the pattern), short: its head is the whole text.
    assert no_answer("The answer is 42, the product of six and seven.") is None
    assert len(offer.searched) == 1
    # A short offer is still found.
    assert no_answer("I'm ready to help with your homework question.") is not None


@pytest.mark.parametrize("opening", OFFERS[:8] + LINKS[:3] + ["Sure! Here it is.", ""])
def test_an_answers_head_is_its_first_sentences_however_long_the_answer(opening: str) -> None:
    body = " ".join(f"Sentence {n} explains step {n}; then more: detail." for n in range(40))
    for text in (f"{opening} {body}", f"{opening}\n\n{body}", f"{body} {opening}"):
        plain = text.translate(degenerate._APOSTROPHE).strip()
        whole = degenerate._SENTENCE.split(plain)
        head = degenerate._SENTENCE.split(plain, degenerate._HEAD_SENTENCES)
        assert head[: degenerate._HEAD_SENTENCES] == whole[: degenerate._HEAD_SENTENCES]
    # The offer that asks for input is found in the head of a long answer too.
    ask = "I'm ready to assist you. Please provide the information you have."
    assert no_answer(f"{ask} {body}") is not None
    assert no_answer(f"{body} {ask}") is None
