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
