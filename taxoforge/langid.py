"""Is this text in the language we asked for? (lingua, low-accuracy mode: fast and small.)"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from taxoforge.languages import LANGUAGES

__all__ = ["LanguageVerdict", "check_language"]

# Texts with fewer letters than this are too short to tell; they pass.
_MIN_LETTERS = 24
# The detector must be this sure of another language before a text is turned down.
_SURE = 0.5
# A text in which the asked language scores at least this is accepted (mixed or ambiguous).
_ENOUGH = 0.2
_CODE = re.compile(r"```.*?```|`[^`]*`|https?://\S+", re.DOTALL)

_detector: Any = None
_by_code: dict[str, Any] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class LanguageVerdict:
    """The check's outcome: ``ok``, and what the text looked like."""

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


def check_language(text: str, expected: str) -> LanguageVerdict:
    """Whether ``text`` is in ``expected`` (an ISO 639-1 code); code, URLs and short texts pass."""
    prose = _CODE.sub(" ", text)
    if sum(ch.isalpha() for ch in prose) < _MIN_LETTERS:
        return LanguageVerdict(True, "", 0.0)
    detector = _load()
    target = _by_code.get(expected.lower())
    if target is None:
        return LanguageVerdict(True, "", 0.0)  # a language the detector does not know
    values = detector.compute_language_confidence_values(prose)
    if not values:
        return LanguageVerdict(True, "", 0.0)
    top = values[0]
    detected = top.language.iso_code_639_1.name.lower()
    if top.language == target:
        return LanguageVerdict(True, detected, float(top.value))
    asked = next((float(v.value) for v in values if v.language == target), 0.0)
    ok = asked >= _ENOUGH or float(top.value) < _SURE
    return LanguageVerdict(ok, detected, float(top.value))
