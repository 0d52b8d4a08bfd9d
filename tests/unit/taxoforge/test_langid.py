"""The language check (lingua, low-accuracy mode), and the FAKE server's replies passing it."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import pytest

from taxoforge import langid
from taxoforge.langid import check_language, check_segments
from taxoforge.testing.fake_llm import _PHRASES, _text_reply

SENTENCES = {
    "fr": "Pourquoi le ciel est-il bleu pendant la journée et rouge au coucher du soleil ?",
    "de": "Warum ist der Himmel am Tag blau und beim Sonnenuntergang rot? Erklären Sie bitte.",
    "es": "¿Por qué el cielo es azul durante el día y rojo al atardecer? Explíquelo, por favor.",
    "en": "Why is the sky blue during the day and red at sunset? Please explain the physics.",
}


@pytest.mark.parametrize("code", sorted(SENTENCES))
def test_sentences_are_detected_in_their_language(code: str) -> None:
    verdict = check_language(SENTENCES[code], code)

    assert verdict.ok
    assert verdict.detected == code
    assert verdict.confidence > 0.5


def test_the_expected_code_is_case_insensitive() -> None:
    assert check_language(SENTENCES["fr"], "FR").ok


@pytest.mark.parametrize("asked", ["fr", "de", "es"])
def test_english_text_when_another_language_is_asked_is_not_ok(asked: str) -> None:
    verdict = check_language(SENTENCES["en"], asked)

    assert not verdict.ok
    assert verdict.detected == "en"
    assert verdict.confidence > 0.5


def test_french_text_when_english_is_asked_is_not_ok() -> None:
    verdict = check_language(SENTENCES["fr"], "en")

    assert not verdict.ok
    assert verdict.detected == "fr"


@pytest.mark.parametrize("text", ["Why is the sky blue?", "", "OK", "2 + 2 = 4 ?", "Mitochondria"])
def test_short_texts_pass(text: str) -> None:
    verdict = check_language(text, "fr")

    assert verdict.ok
    assert verdict.detected == ""


@pytest.mark.parametrize("code", ["xx", "tlh", "qq"])
def test_unknown_language_codes_pass(code: str) -> None:
    verdict = check_language(SENTENCES["en"], code)

    assert verdict.ok
    assert verdict.detected == ""


def test_a_code_block_is_ignored() -> None:
    code = (
        "```python\n"
        "def running_average(values):\n"
        "    # returns the average of all the values seen so far, for every position\n"
        "    total = 0\n"
        "    return [(total := total + v) / (i + 1) for i, v in enumerate(values)]\n"
        "```"
    )

    assert check_language(code, "fr").ok
    assert check_language(f"{SENTENCES['fr']}\n\n{code}", "fr").ok


def test_inline_code_and_urls_are_ignored() -> None:
    text = (
        "Lisez `read_the_configuration_file_and_return_settings()` puis "
        "https://example.com/how-to-read-the-configuration-file-and-return-settings"
    )

    verdict = check_language(text, "fr")

    assert verdict.ok
    assert verdict.detected == "", "too little prose once code and URLs are removed"


def test_prose_around_code_is_still_checked() -> None:
    text = f"{SENTENCES['en']}\n```python\nprint('bonjour tout le monde, comment allez-vous')\n```"

    assert not check_language(text, "fr").ok


# ---- The FAKE server's language-aware replies (taxoforge.testing.fake_llm) ----

NAMES = {"en": "English", "fr": "French", "de": "German", "es": "Spanish"}
SEEDS = [hashlib.sha256(str(n).encode()).digest() for n in range(200)]


def _prompt(name: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"You write realistic requests. You write in {name}."},
        {"role": "user", "content": f"Write one request about optics. Write it in {name}."},
    ]


@pytest.mark.parametrize("code", sorted(NAMES))
def test_the_fake_answers_in_the_language_the_prompt_names(code: str) -> None:
    phrases = _PHRASES[NAMES[code]]

    for seed in SEEDS[:20]:
        reply = _text_reply(_prompt(NAMES[code]), seed)
        starts = [p.split("{w}")[0] for p in phrases]
        assert any(reply.startswith(s) for s in starts), reply


def test_the_fake_answers_in_english_without_a_named_language() -> None:
    reply = _text_reply([{"role": "user", "content": "Write a question about optics."}], SEEDS[0])

    assert any(reply.startswith(p.split("{w}")[0]) for p in _PHRASES["English"])


def test_the_fake_answers_in_english_when_asked_to_be_wrong() -> None:
    reply = _text_reply(_prompt("French"), SEEDS[0], english=True)

    assert any(reply.startswith(p.split("{w}")[0]) for p in _PHRASES["English"])
    assert not check_language(reply, "fr").ok


def test_the_fake_reply_is_deterministic_per_seed() -> None:
    assert _text_reply(_prompt("German"), SEEDS[1]) == _text_reply(_prompt("German"), SEEDS[1])
    assert _text_reply(_prompt("German"), SEEDS[1]) != _text_reply(_prompt("German"), SEEDS[2])


@pytest.mark.parametrize(
    "code",
    ["en", "de", "fr", "es"],
)
def test_the_fakes_replies_pass_the_language_check(code: str) -> None:
    failures = []
    for seed in SEEDS:
        reply = _text_reply(_prompt(NAMES[code]), seed)
        verdict = check_language(reply, code)
        if not verdict.ok:
            failures.append((reply, verdict))

    assert failures == []


class _CountingDetector:
    """The real detector, counting the texts it is asked about."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def compute_language_confidence_values(self, text: str) -> Any:
        self.texts.append(text)
        return self.inner.compute_language_confidence_values(text)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> _CountingDetector:
    detector = _CountingDetector(langid._load())
    monkeypatch.setattr(langid, "_detector", detector)
    monkeypatch.setattr(langid, "_cache", OrderedDict())
    return detector


def test_a_text_checked_whole_then_by_sentence_is_detected_once(
    counting: _CountingDetector,
) -> None:
    # No "?": the whole text is one segment.
    sentence = "Warum ist der Himmel am Tag blau und beim Sonnenuntergang rot"

    assert check_language(sentence, "es").detected == "de"
    assert not check_segments(sentence, "es", min_letters=10, sure=0.5).ok
    assert check_language(sentence, "es").detected == "de"

    assert counting.texts == [sentence]


def test_sentences_with_the_asked_languages_grammar_are_not_sent_to_the_detector(
    counting: _CountingDetector,
) -> None:
    text = (
        "The committee will meet on Monday to discuss the budget for the new library. "
        "Le comité discutera du budget de la nouvelle bibliothèque pendant la réunion."
    )

    verdict = check_segments(text, "en", min_letters=10, sure=0.5)

    assert not verdict.ok
    assert verdict.detected == "fr"
    assert counting.texts == [verdict.segment]


def test_only_the_head_of_a_long_text_is_read() -> None:
    french = " ".join([SENTENCES["fr"]] * 40)  # ~3,200 characters
    english = " ".join([SENTENCES["en"]] * 200)

    assert len(french) > langid.MAX_CHECKED_CHARS
    assert check_language(f"{french} {english}", "fr").ok
    assert check_language(f"{english} {french}", "fr").detected == "en"


def test_a_text_full_of_the_asked_languages_own_grammar_is_not_sent_to_the_detector(
    counting: _CountingDetector,
) -> None:
    text = (
        "Explain how the water cycle moves water between the oceans, the atmosphere and the "
        "land, and describe the role that evaporation plays in it."
    )

    verdict = check_language(text, "en")

    assert verdict.ok and verdict.detected == "en"
    assert counting.texts == []


def test_a_few_words_of_the_asked_language_do_not_settle_it(counting: _CountingDetector) -> None:
    # Two English grammar words in a French sentence: the detector decides, and turns it down.
    text = f"{SENTENCES['fr']} The answer, and nothing else."

    verdict = check_language(text, "en")

    assert not verdict.ok and verdict.detected == "fr"
    assert len(counting.texts) == 1


def test_a_latin_sentence_no_known_language_could_claim_is_not_sent_to_the_detector(
    counting: _CountingDetector,
) -> None:
    # Nouns with no grammar words: whatever the detector named, it could not fail an English
    # text (another Latin language needs its grammar words to count, and no other script is
    # named for Latin letters).
    nouns = "Morning village letter garden kitchen station (bicycle window market forest)"

    assert check_segments(nouns, "en", min_letters=10, sure=0.5).ok
    assert counting.texts == []


def test_a_latin_sentence_with_another_languages_grammar_is_still_detected(
    counting: _CountingDetector,
) -> None:
    french = "Le comité discutera du budget de la nouvelle bibliothèque pendant la réunion."

    verdict = check_segments(french, "en", min_letters=10, sure=0.5)

    assert not verdict.ok and verdict.detected == "fr"
    assert counting.texts == [french]


def test_a_sentence_in_another_script_is_still_detected(counting: _CountingDetector) -> None:
    russian = "Комитет обсудит бюджет новой библиотеки в понедельник на общем собрании"

    verdict = check_segments(f"Explain this. {russian}", "en", min_letters=10, sure=0.5)

    assert not verdict.ok and verdict.detected == "ru"
    assert counting.texts == [russian]
