"""The pure hashing under dedup: word and shingle hashes, exact Jaccard, and the one-pass
MinHash signatures of a page of records."""

from __future__ import annotations

import hashlib
import random
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from taxoforge.dedupe import (
    exact_jaccard,
    minhash_batch,
    normalize_text,
    shingle_hashes,
    shingles,
    word_hashes,
    words_of,
)

WORDS = [f"w{i}" for i in range(400)]
_WORD = re.compile(r"\w+")  # the rule normalize_text states


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _set_jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y) if x | y else 1.0


def test_words_of_are_the_words_normalize_text_joins() -> None:
    text = "  Héllo, WORLD!!  cafe\u0301 \uff21\uff22 "
    assert " ".join(words_of(text)) == normalize_text(text)


def test_word_hashes_are_blake2b_and_stable_across_calls() -> None:
    words = ["alpha", "beta", "alpha", "new-word-xyz"]
    expected = [int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest()) for w in words]
    assert word_hashes(words).tolist() == expected
    assert word_hashes(words).tolist() == expected  # from the cache now


def test_exact_jaccard_of_shingle_hashes_is_that_of_the_shingle_sets() -> None:
    rng = random.Random(3)
    texts = [_text(rng, n) for n in (1, 2, 3, 5, 30, 200)]
    texts += [t + " extra words" for t in texts] + ["", "Two words", "two, WORDS!"]
    for a in texts:
        for b in texts:
            got = exact_jaccard(shingle_hashes(a), shingle_hashes(b))
            assert abs(got - _set_jaccard(a, b)) < 1e-12, (a, b)


def test_shingle_hashes_are_sorted_and_distinct() -> None:
    hashed = shingle_hashes("a b a b a b c")  # bigrams: "a b", "b a", "b c"
    assert hashed.size == 3
    assert np.all(np.diff(hashed.astype(np.float64)) > 0)


def test_a_signature_does_not_depend_on_the_page_it_is_computed_in() -> None:
    rng = np.random.default_rng(5)
    sets = [rng.integers(0, 2**63, size=n, dtype=np.uint64) for n in (0, 1, 3, 50, 400)]
    page = minhash_batch(sets, 128, 7)
    for i, s in enumerate(sets):
        assert np.array_equal(minhash_batch([s], 128, 7)[0], page[i])
    assert not np.array_equal(minhash_batch(sets, 128, 8), page)  # the seed matters


def test_signatures_agree_in_proportion_to_the_jaccard_similarity() -> None:
    # The agreement of two signatures estimates Jaccard without bias, small sets (mostly empty
    # bins, densified) and large ones alike; averaged over 200 seeds it is within 0.02.
    rng = np.random.default_rng(11)
    for size, shared in ((8, 6), (40, 30), (300, 260), (300, 60)):
        jaccard = shared / (2 * size - shared)
        agreement = []
        for seed in range(200):
            pool = rng.integers(0, 2**63, size=2 * size - shared, dtype=np.uint64)
            a, b = pool[:size], np.concatenate([pool[:shared], pool[size:]])
            sig = minhash_batch([a, b], 128, seed)
            agreement.append(float(np.mean(sig[0] == sig[1])))
        assert abs(np.mean(agreement) - jaccard) < 0.02, (size, shared)


def test_equal_sets_have_equal_signatures_and_no_bin_is_left_empty() -> None:
    a = np.array([5, 9, 12], dtype=np.uint64)
    sig = minhash_batch([a, a[::-1].copy(), np.empty(0, dtype=np.uint64)], 64, 1)
    assert np.array_equal(sig[0], sig[1])
    assert not np.any(sig == np.uint64(2**64 - 1))


def test_ascii_text_splits_into_the_words_the_unicode_rule_finds() -> None:
    rng = random.Random(17)
    alphabet = [chr(c) for c in range(128)]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        unicode_rule = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
        assert words_of(text) == unicode_rule, repr(text)
    assert words_of("Ünïcode, CAFÉ_1 x\u00a0y") == ["ünïcode", "café_1", "x", "y"]


def test_a_word_memo_splits_and_hashes_each_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import taxoforge.dedupe as dedupe

    hashed: list[int] = []
    real = dedupe.word_hashes

    def counting(words: Sequence[str]) -> NDArray[np.uint64]:
        hashed.append(len(words))
        return real(words)

    monkeypatch.setattr(dedupe, "word_hashes", counting)
    memo = dedupe.WordMemo()
    texts = ["The cat sat.", "", "the CAT sat", "The cat sat."]
    flat = dedupe.texts_word_hashes(texts, memo)
    again = dedupe.texts_word_hashes(texts[:1], memo)
    assert hashed == [3, 0, 3]  # the repeated text was hashed once, on both calls
    assert flat.tolist() == real([w for t in texts for w in dedupe.words_of(t)]).tolist()
    assert again.tolist() == flat[:3].tolist()
    assert memo("the CAT sat") == ["the", "cat", "sat"]
    # Without a memo the words are hashed as they come, to the same values.
    assert dedupe.texts_word_hashes(texts).tolist() == flat.tolist()
