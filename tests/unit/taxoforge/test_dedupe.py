"""Duplicate instructions within a job: text normalization and MinHash similarity (the claims
run against real NATS in tests/integration/test_duplicate_index.py)."""

from __future__ import annotations

import numpy as np

from taxoforge.dedupe import jaccard, normalize_text, signature

LONG = (
    "Explain how the water cycle moves water between the oceans, the atmosphere and the land, "
    "and describe the role of evaporation and condensation in it."
)
ONE_WORD_EDIT = LONG.replace("condensation", "precipitation")
UNRELATED = (
    "Write a Python function that parses a CSV file of bank transactions and reports the "
    "monthly totals per category."
)


# ---- normalize_text ----


def test_normalize_folds_case_punctuation_and_spacing() -> None:
    assert normalize_text("  Hello, WORLD!!  How's it\n\tgoing? ") == "hello world how s it going"


def test_normalize_folds_unicode_encodings() -> None:
    assert normalize_text("cafe\u0301") == normalize_text("caf\u00e9")
    # full-width letters and digits
    assert normalize_text("\uff21\uff22\uff23 \uff11\uff12\uff13") == "abc 123"
    assert normalize_text("STRASSE") == normalize_text("straße")


def test_normalize_of_punctuation_only_is_empty() -> None:
    assert normalize_text(" ?! ... -- ") == ""


# ---- signature and jaccard ----


def test_signature_is_a_fixed_size_deterministic_array() -> None:
    sig = signature(LONG)

    assert sig.ndim == 1
    assert sig.shape == signature(UNRELATED).shape
    assert sig.dtype == np.uint64
    assert np.array_equal(sig, signature(LONG))


def test_identical_texts_are_fully_similar() -> None:
    assert jaccard(signature(LONG), signature(LONG)) == 1.0


def test_texts_that_differ_in_case_and_punctuation_only_are_fully_similar() -> None:
    assert jaccard(signature(LONG), signature(LONG.upper().replace(",", " ;"))) == 1.0


def test_unrelated_texts_are_not_similar() -> None:
    assert jaccard(signature(LONG), signature(UNRELATED)) < 0.3


def test_a_one_word_edit_of_a_long_sentence_is_very_similar() -> None:
    similarity = jaccard(signature(LONG), signature(ONE_WORD_EDIT))

    assert 0.6 < similarity < 1.0
