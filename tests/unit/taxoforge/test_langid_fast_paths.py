"""The language checks' fast paths give what their plain definitions give: the sentence
split, the quote pattern, the letter and grammar-word counts that stop early. Compared over
texts made to hit their edges (every stop and quote mark, CJK, runs of white space)."""

from __future__ import annotations

import random
import re

import pytest

from taxoforge import langid
from taxoforge.langid import check_segments

PIECES = [
    "The cell divides.",
    "Why?",
    "Yes!",
    "Note: this;",
    "a.b",
    "e.g. the",
    "It's",
    "don't",
    "'quoted words here'",
    "'x'",
    "\u201cdouble quoted\u201d",
    '"plain quotes"',
    "\u00abguillemets\u00bb",
    "\u201elow quote\u201c",
    "\u300c\u65e5\u672c\u8a9e\u300d",
    "\u300e\u4e8c\u91cd\u300f",
    "\u2018single\u2019",
    "\u4f60\u597d\u3002",
    "\u771f\u7684\uff01",
    "\u4ec0\u4e48\uff1f",
    "\u662f\uff1b",
    "\u3002",
    ".",
    "?!",
    ":",
    "123",
    "_",
    "\u00e9t\u00e9",
    "la photosynth\u00e8se est",
    "der Baum und die",
    "of the and",
]
SPACES = [" ", "  ", "\t", "", " \u3000", "\u00a0"]


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(PIECES) + rng.choice(SPACES) for _ in range(rng.randint(1, 14))]
        out.append("".join(parts))
    return out


TEXTS = _texts(3000, 7)
# The sentence split's plain definition: after ., !, ?, ; or : the white space that follows
# goes; after a full-width stop the text is cut right there.
SENTENCE = re.compile(r"(?<=[.!?;:])\s+|(?<=[\u3002\uff01\uff1f\uff1b])")


def test_the_sentence_split_is_the_pattern_split() -> None:
    for text in TEXTS:
        assert langid._sentences(text) == SENTENCE.split(text), text


def test_the_quote_pattern_with_its_start_check_is_the_plain_one() -> None:
    plain = re.compile(langid._QUOTED_BRANCHES)
    for text in TEXTS:
        assert langid._QUOTED.sub(" ", text) == plain.sub(" ", text), text


@pytest.mark.parametrize("least", [0, 1, 5, 24, 40, 200])
def test_letter_and_weight_checks_stop_early_with_the_full_counts_answer(least: int) -> None:
    for text in TEXTS:
        letters = sum(ch.isalpha() for ch in text)
        weight = letters + len(langid._CJK.findall(text))
        assert langid._letters_at_least(text, least) == (letters >= least), text
        assert langid._heavy_enough(text, least) == (weight >= least), text


def test_the_grammar_check_stops_early_with_the_full_counts_answer() -> None:
    for code in ("en", "fr", "de"):
        grammar = langid._FUNCTION_WORDS[code]
        for text in TEXTS:
            folded = text.casefold()
            full = langid._grammar(langid._WORD.findall(folded), grammar)
            enough = full >= langid._FUNCTION_WORDS_ENOUGH
            assert langid._grammar_enough(folded, grammar) == enough, (code, text)


def test_a_sentence_in_another_language_still_fails_the_text() -> None:
    english = "The leaf turns light into sugar, and the plant stores it for the night."
    german = "Der Baum wächst im Wald, und die Blätter fallen im Herbst auf den Boden."
    assert check_segments(english + " " + english, "en").ok
    verdict = check_segments(f"{english} {german}", "en")
    assert not verdict.ok and verdict.detected == "de"
