"""Is this text in the language we asked for? (lingua, low-accuracy mode: fast and small.)"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from taxoforge.languages import LANGUAGES

__all__ = ["LanguageVerdict", "MixedVerdict", "check_language", "check_segments"]

# Texts with fewer letters than this are too short to tell; they pass.
_MIN_LETTERS = 24
# The detector must be this sure of another language before a text is turned down.
_SURE = 0.5
# A text in which the asked language scores at least this is accepted (mixed or ambiguous).
_ENOUGH = 0.2
_CODE = re.compile(r"```.*?```|`[^`]*`|https?://\S+", re.DOTALL)
# Quoted text may rightly be in another language (a sentence to translate, a cited title).
_QUOTED_BRANCHES = (
    r"«[^»]*»|“[^”]*”|„[^“”]*[“”]|「[^」]*」|『[^』]*』|\"[^\"\n]*\"|\u2018[^\u2019]*\u2019"
    r"|(?<!\w)'[^'\n]{2,}'(?!\w)"
)
# The characters a quote opens with, checked first at each position: 3x faster than trying
# every branch there.
_QUOTED = re.compile(f"(?=[«“„「『\"\u2018'])(?:{_QUOTED_BRANCHES})")
# Sentences end at ., !, ?, ; and : followed by white space, and right after their full-width
# forms. Found by one forward search (the white space after a Latin stop is group 1), where
# ``re.split`` on look-behinds tested both kinds at every position of a text.
_SENTENCE_END = re.compile(r"[.!?;:](\s+)|[。\uff01\uff1f\uff1b]")
_WORD = re.compile(r"[^\W\d_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
# A segment the detector gives to another language still counts as the asked language when it
# holds this many of that language's function words: loanwords ("le machine learning est un
# domaine") fool a detector on one sentence, grammar words do not lie.
_FUNCTION_WORDS_ENOUGH = 2


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Languages not written in the Latin alphabet (a sentence in one of them inside a Latin-script
# text, or the reverse, is told by its letters).
_OTHER_SCRIPTS = _words(
    "ar be bg bn el fa gu he hi hy ja ka kk ko mk mn mr pa ru sr ta te th uk ur zh"
)


_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": _words(
        "a an and are be can do does for how in is it its of on or that the these this to "
        "was were what which who why with you your"
    ),
    "fr": _words(
        "à au aux avec ce ces cette comment dans de des du elle en est et il la le les ne nous "
        "ou pas pour pourquoi que quel quelle qui sa ses son sont sur un une vous"
    ),
    "de": _words(
        "auch auf das dem den der des die ein eine einem einen für ihr im in ist mit "
        "nicht oder sie sind und von warum was welche wie zu zum zur"
    ),
    "es": _words(
        "al con cómo de del el en es esta este la las los no o para por que qué se son su "
        "sus un una unas unos y"
    ),
    "it": _words(
        "al che come con del della di e gli i il in la le lo non o per perché questa "
        "questo si sono un una è"
    ),
    "pt": _words(
        "a as com como da das de do dos e em esta este na no não o os ou para por que se "
        "são um uma é"
    ),
    "nl": _words("dat de die een en het hoe in is met niet of ook op te van voor waarom wat zijn"),
}

# Each language's own grammar words: its function words that no other listed language has and
# longer than two letters (short ones are shared by many). A text in which they are at least
# ``_OWN_SHARE`` of the words (and ``_OWN_ENOUGH`` of them) is in that language, or mostly is,
# which the detector would accept too: it is not asked (a third of the generator's CPU was
# the detector). Dutch is left out: Afrikaans, which the detector tells apart, shares them.
_OWN_SHARE = 0.15
_OWN_ENOUGH = 4
_OWN_WORDS: dict[str, frozenset[str]] = {
    code: frozenset(
        w
        for w in words
        if len(w) > 2 and not any(w in other for c, other in _FUNCTION_WORDS.items() if c != code)
    )
    for code, words in _FUNCTION_WORDS.items()
    if code != "nl"
}

_detector: Any = None
_by_code: dict[str, Any] = {}
_lock = threading.Lock()
# A draft is checked whole and then sentence by sentence, and a one-sentence text is the same
# string both times: the detector's answer is kept for the most recent texts (it was a third of
# the generator's CPU).
_CACHE_SIZE = 2048
_cache: OrderedDict[str, Any] = OrderedDict()
# The detector's cost grows with the text, its verdict on a long text is settled well before
# its end: only this many characters of prose are read.
MAX_CHECKED_CHARS = 2000


@dataclass(frozen=True)
class LanguageVerdict:
    """The check's outcome: ``ok``, and what the text looked like (``confidence`` is the
    detector's, or 1.0 when the asked language's own grammar words settled it)."""

    ok: bool
    detected: str
    confidence: float


def _load() -> Any:
    global _detector
    with _lock:
        if _detector is None:
            from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

            languages = []
            for code in LANGUAGES:
                iso = getattr(IsoCode639_1, code.upper(), None)
                if iso is None:
                    continue
                language = Language.from_iso_code_639_1(iso)
                _by_code[code] = language
                languages.append(language)
            _detector = (
                LanguageDetectorBuilder.from_languages(*languages).with_low_accuracy_mode().build()
            )
    return _detector


def _confidences(text: str) -> Any:
    """The detector's confidence values for ``text`` (stripped), from the cache when seen."""
    text = text.strip()
    with _lock:
        values = _cache.get(text)
        if values is not None:
            _cache.move_to_end(text)
            return values
    values = _load().compute_language_confidence_values(text)
    with _lock:
        _cache[text] = values
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return values


def check_language(text: str, expected: str) -> LanguageVerdict:
    """Whether ``text`` is in ``expected`` (an ISO 639-1 code); code, URLs and short texts pass."""
    prose = _CODE.sub(" ", text)
    if not _letters_at_least(prose, _MIN_LETTERS):
        return LanguageVerdict(True, "", 0.0)
    _load()
    target = _by_code.get(expected.lower())
    if target is None:
        return LanguageVerdict(True, "", 0.0)  # a language the detector does not know
    own = _OWN_WORDS.get(expected.lower())
    if own is not None:
        words = _WORD.findall(prose.casefold())
        hits = sum(w in own for w in words)
        if hits >= _OWN_ENOUGH and hits >= _OWN_SHARE * len(words):
            return LanguageVerdict(True, expected.lower(), 1.0)
    values = _confidences(_head(prose))
    if not values:
        return LanguageVerdict(True, "", 0.0)
    top = values[0]
    detected = top.language.iso_code_639_1.name.lower()
    if top.language == target:
        return LanguageVerdict(True, detected, float(top.value))
    asked = next((float(v.value) for v in values if v.language == target), 0.0)
    ok = asked >= _ENOUGH or float(top.value) < _SURE
    return LanguageVerdict(ok, detected, float(top.value))


@dataclass(frozen=True)
class MixedVerdict:
    """Sentence by sentence: ``ok``, else the first sentence in another language and what it
    looked like."""

    ok: bool
    segment: str = ""
    detected: str = ""
    confidence: float = 0.0


def _grammar(words: list[str], function_words: frozenset[str]) -> int:
    return sum(w in function_words for w in words)


def _grammar_enough(folded: str, function_words: frozenset[str]) -> bool:
    """``_grammar(_WORD.findall(folded), function_words) >= _FUNCTION_WORDS_ENOUGH``, reading
    the words only until enough are found (a sentence's first few words, mostly)."""
    found = 0
    for word in _WORD.finditer(folded):
        if word.group() in function_words:
            found += 1
            if found >= _FUNCTION_WORDS_ENOUGH:
                return True
    return False


def _letters_at_least(text: str, least: int) -> bool:
    """Whether ``text`` holds ``least`` letters, read only as far as it takes to find them
    (counting every letter of a long answer was a tenth of its language checks)."""
    if least <= 0:
        return True
    if len(text) < least:
        return False
    letters = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            if letters >= least:
                return True
    return False


def _heavy_enough(text: str, least: int) -> bool:
    """Whether ``text`` weighs ``least``: its letters, a CJK character counted twice (it
    carries about a word's worth of a syllable-script text)."""
    if _letters_at_least(text, least):  # a CJK character is a letter too: enough already
        return True
    return sum(map(str.isalpha, text)) + len(_CJK.findall(text)) >= least


# Letters of the Latin script (basic, Latin-1, Extended-A/B and Additional). The detector
# weighs only languages written in the alphabet a text's letters are in, so it names no language
# of another script for a text whose letters are all of these.
_NON_LATIN_LETTER = re.compile(r"[^\W\d_A-Za-z\u00c0-\u024f\u1e00-\u1eff]")


def _latin_only(text: str) -> bool:
    return _NON_LATIN_LETTER.search(text) is None


def _other_grammar(words: list[str], expected: str) -> bool:
    """Whether ``words`` hold enough grammar words of a language other than ``expected`` for
    the detector's verdict to count. In a Latin-script segment of a Latin-script language,
    ``check_segments`` fails a sentence only when the detector names a language whose grammar
    words we know and the sentence holds enough of them: without any such language the
    detector's answer cannot fail it, so it is not asked (it was a tenth of the generator's
    CPU)."""
    code = expected.lower()
    return any(
        _grammar(words, other) >= _FUNCTION_WORDS_ENOUGH
        for language, other in _FUNCTION_WORDS.items()
        if language != code
    )


def _head(prose: str) -> str:
    """The first ``MAX_CHECKED_CHARS`` characters of ``prose``, cut at a space."""
    if len(prose) <= MAX_CHECKED_CHARS:
        return prose
    cut = prose.rfind(" ", 0, MAX_CHECKED_CHARS)
    return prose[: cut if cut > 0 else MAX_CHECKED_CHARS]


def _segments(text: str) -> list[str]:
    prose = _QUOTED.sub(" ", _CODE.sub(" ", text))
    out: list[str] = []
    for line in prose.splitlines():
        out.extend(s.strip() for s in _sentences(line) if s.strip())
    return out


def _sentences(line: str) -> list[str]:
    """``line`` cut into sentences: a Latin stop ends one before the white space after it
    (which goes), a full-width stop right after itself."""
    out: list[str] = []
    start = 0
    for end in _SENTENCE_END.finditer(line):
        out.append(line[start : end.start(1) if end.group(1) is not None else end.end()])
        start = end.end()
    out.append(line[start:])
    return out


def check_segments(
    text: str, expected: str, min_letters: int = 40, sure: float = 0.9
) -> MixedVerdict:
    """Whether every sentence (and line) of ``text`` is in ``expected``: a whole sentence in
    another language fails the text even when the text as a whole reads as ``expected``.
    Sentences shorter than ``min_letters`` (CJK characters count twice), code, URLs and quoted
    text are not judged; a sentence fails when the detector gives another language at least
    ``sure`` and the asked one almost nothing, it holds few of the asked language's function
    words and, for languages whose function words we know, several of the detected one's."""
    _load()
    target = _by_code.get(expected.lower())
    if target is None:
        return MixedVerdict(True)  # a language the detector does not know
    grammar = _FUNCTION_WORDS.get(expected.lower())
    # (A detector that names nothing gives every language 0: only a positive ``sure`` is safe.)
    latin = expected.lower() not in _OTHER_SCRIPTS and sure > 0
    for segment in _segments(text):
        if not _heavy_enough(segment, min_letters):
            continue
        folded = segment.casefold()
        # A sentence with the asked language's grammar passes whatever the detector says, so
        # the detector is not asked (most sentences of a text in a known language stop here).
        if grammar is not None and _grammar_enough(folded, grammar):
            continue
        words = _WORD.findall(folded)
        if latin and not _other_grammar(words, expected) and _latin_only(segment):
            continue  # the detector's answer could not fail it (see ``_other_grammar``)
        values = _confidences(segment)
        if not values or values[0].language == target:
            continue
        top = values[0]
        asked = next((float(v.value) for v in values if v.language == target), 0.0)
        if float(top.value) < sure or asked >= 1.0 - sure:
            continue
        detected = top.language.iso_code_639_1.name.lower()
        # Two languages of one script: the detector must be backed by the other language's
        # grammar, which a sentence has and a list of nouns ("morning village letter garden")
        # or names has not. Across scripts the letters themselves tell.
        if expected.lower() not in _OTHER_SCRIPTS and detected not in _OTHER_SCRIPTS:
            other = _FUNCTION_WORDS.get(detected)
            if other is None or _grammar(words, other) < _FUNCTION_WORDS_ENOUGH:
                continue
        return MixedVerdict(False, segment[:160], detected, float(top.value))
    return MixedVerdict(True)
