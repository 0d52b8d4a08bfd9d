"""Duplicates inside an import, and overlap with benchmark prompts, in memory.

``Deduplicator`` finds exact duplicates (the same normalized text) and near duplicates
(word-bigram MinHash signatures, the ones :mod:`taxoforge.dedupe` uses for generated
instructions, candidates from an LSH index, confirmed by the signatures' Jaccard estimate).
``Decontaminator`` finds training texts that share word n-grams with registered benchmark
prompts, the GLAN/GPT-3 style of decontamination.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH
from numpy.typing import NDArray

from taxoforge.dedupe import jaccard, normalize_text, signature

__all__ = ["Contamination", "Decontaminator", "Deduplicator"]

# How the LSH bands are chosen for a threshold: the (bands, rows) that minimize 0.1 x the
# false-positive area + 0.9 x the false-negative area of the banding's S-curve (datasketch's
# criterion, with recall-heavy weights: every candidate is confirmed by its Jaccard estimate,
# so a false positive costs one comparison while a false negative is a missed duplicate), with
# 2 to 10 bands. Equal weights would find only 36% of the pairs at Jaccard 0.8 (5 bands of 11
# rows); these find 85%, and 95% at 0.85 (8 bands of 7 rows). Memory grows with the bands,
# hence the cap (taxoforge.dedupe uses 10 bands too).
_FALSE_POSITIVE_WEIGHT = 0.1
_MIN_BANDS = 2
_MAX_BANDS = 10


def _bands(threshold: float, width: int) -> tuple[int, int]:
    """The LSH (bands, rows per band) for ``threshold`` and ``width`` permutations."""
    below = np.linspace(0.0, threshold, 201)
    above = np.linspace(threshold, 1.0, 201)
    best: tuple[float, int, int] | None = None
    for bands in range(_MIN_BANDS, _MAX_BANDS + 1):
        for rows in range(1, width // bands + 1):
            false_pos = float(np.trapezoid(1.0 - (1.0 - below**rows) ** bands, below))
            false_neg = float(np.trapezoid((1.0 - above**rows) ** bands, above))
            error = _FALSE_POSITIVE_WEIGHT * false_pos + (1.0 - _FALSE_POSITIVE_WEIGHT) * false_neg
            if best is None or error < best[0] - 1e-12:
                best = (error, bands, rows)
    assert best is not None
    return best[1], best[2]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


class Deduplicator:
    """Exact and near-duplicate queries over a batch (a whole import), in memory.

    Exact: the SHA-256 of :func:`taxoforge.dedupe.normalize_text`, so case, punctuation and
    spacing do not matter. Near: datasketch's MinHashLSH over the word-bigram MinHash
    signatures of :func:`taxoforge.dedupe.signature` (its 60 permutations; 2 to 10 bands
    chosen for the threshold, favouring recall), each candidate confirmed by the signatures' Jaccard
    estimate >= the threshold. The first text of a group is new; later ones are its duplicates
    and are not remembered.
    """

    def __init__(self, near_threshold: float) -> None:
        """``near_threshold`` in (0, 1]: Jaccard similarity at which two texts are near
        duplicates; 0 finds exact duplicates only."""
        if not 0.0 <= near_threshold <= 1.0:
            raise ValueError(f"near_threshold must be in [0, 1], got {near_threshold}")
        self.near_threshold = near_threshold
        self._exact: dict[bytes, int] = {}
        self._ids: list[str] = []
        self._lsh: MinHashLSH | None = None
        self._template: MinHash | None = None
        self._signatures = np.empty((0, 0), dtype=np.uint64)
        if near_threshold > 0:
            width = len(signature(""))
            self._lsh = MinHashLSH(
                threshold=near_threshold, num_perm=width, params=_bands(near_threshold, width)
            )
            # Made like taxoforge.dedupe's MinHash, so its hash scheme (and the dtype its hash
            # values fit) is the signatures' one; its permutations are shared by the MinHash
            # objects that hand signatures to the index.
            self._template = MinHash(num_perm=width)
            dtype = self._template.hashvalues.dtype
            self._signatures = np.empty((1024, width), dtype=dtype)

    def __len__(self) -> int:
        """How many distinct texts are remembered."""
        return len(self._ids)

    def check(self, item_id: str, text: str) -> tuple[str, str] | None:
        """None if ``text`` is new (it is remembered from now on); else (reason, detail).

        reason is "duplicate" (detail "same text as <item_id>") or "near_duplicate" (detail
        "<similarity> similar to <item_id>"), naming the earlier item it repeats; among
        several near ones, the most similar (ties: the earliest). Checking a remembered item
        again under its own id is not a duplicate.
        """
        key = _digest(normalize_text(text))
        owner = self._exact.get(key)
        if owner is not None:
            if self._ids[owner] == item_id:
                return None
            return "duplicate", f"same text as {self._ids[owner]}"
        index = len(self._ids)
        if self._lsh is not None and self._template is not None:
            sig = signature(text)
            minhash = MinHash(
                hashvalues=sig,
                permutations=self._template.permutations,
                scheme=self._template.scheme,
            )
            found = self._near(sig, minhash)
            if found is not None:
                other, similarity = found
                return "near_duplicate", f"{similarity:.2f} similar to {self._ids[other]}"
            if index == len(self._signatures):
                grown = np.empty((2 * index, sig.size), dtype=self._signatures.dtype)
                grown[:index] = self._signatures
                self._signatures = grown
            self._signatures[index] = minhash.hashvalues
            self._lsh.insert(index, minhash, check_duplication=False)
        self._exact[key] = index
        self._ids.append(item_id)
        return None

    def _near(self, sig: NDArray[np.uint64], minhash: MinHash) -> tuple[int, float] | None:
        """The most similar remembered text at or above the threshold (ties: earliest)."""
        assert self._lsh is not None
        candidates = sorted(int(c) for c in self._lsh.query(minhash))
        best: tuple[int, float] | None = None
        for other in candidates:
            similarity = jaccard(sig, self._signatures[other])
            if similarity >= self.near_threshold and (best is None or similarity > best[1]):
                best = (other, similarity)
        return best


@dataclass(frozen=True)
class Contamination:
    """Why a text counts as contaminated: the benchmark, the fraction of the text's n-grams
    found in it (for a short text: the matched prompt's share of its words), how many n-grams
    matched, and one match as evidence."""

    benchmark: str
    overlap: float
    matched: int
    evidence: str


# Odd multiplier of the n-gram hash (a polynomial over 64-bit word hashes, mod 2**64).
_PRIME = np.uint64(0x100000001B3)
_WORD_CACHE = 1 << 20


class Decontaminator:
    """Overlap of training texts with registered benchmark prompts, by word n-grams.

    Texts are compared after :func:`taxoforge.dedupe.normalize_text`. Each benchmark keeps a
    sorted array of 64-bit hashes of its prompts' n-grams (8 bytes each), plus the whole
    normalized text of each prompt shorter than ``ngram`` words.
    """

    def __init__(self, ngram: int = 10, overlap: float = 0.0) -> None:
        """``ngram``: words per n-gram. ``overlap``: 0 = any shared n-gram contaminates;
        above 0 = at least that fraction of the text's n-grams must be found."""
        if ngram < 1:
            raise ValueError(f"ngram must be >= 1, got {ngram}")
        if not 0.0 <= overlap <= 1.0:
            raise ValueError(f"overlap must be in [0, 1], got {overlap}")
        self.ngram = ngram
        self.overlap = overlap
        self._hashes: dict[str, NDArray[np.uint64]] = {}
        # Normalized short prompt -> the first benchmark that has it.
        self._short: dict[str, str] = {}
        self._longest_short = 0
        self._word_hashes: dict[str, int] = {}

    @property
    def benchmarks(self) -> list[str]:
        """Registered benchmark names, in registration order."""
        return list(self._hashes)

    def add_benchmark(self, name: str, prompts: Iterable[str]) -> int:
        """Register ``prompts`` under ``name`` (again: added to it); returns how many were
        added (prompts with no words are not)."""
        added = 0
        parts: list[NDArray[np.uint64]] = [self._hashes.get(name, np.empty(0, dtype=np.uint64))]
        for prompt in prompts:
            words = normalize_text(prompt).split()
            if not words:
                continue
            added += 1
            if len(words) < self.ngram:
                self._short.setdefault(" ".join(words), name)
                self._longest_short = max(self._longest_short, len(words))
            else:
                parts.append(self._ngram_hashes(words))
        self._hashes[name] = np.unique(np.concatenate(parts))
        return added

    def check(self, text: str) -> Contamination | None:
        """The benchmark ``text`` overlaps most (ties: the first registered), or None.

        A text of at least ``ngram`` words is contaminated when one of its n-grams is in a
        benchmark (``overlap`` 0) or at least ``overlap`` of them are. A shorter text is
        contaminated when it contains a whole short benchmark prompt (as a run of words, its
        whole text included) making up at least ``overlap`` of its words.
        """
        words = normalize_text(text).split()
        if not words:
            return None
        if len(words) < self.ngram:
            return self._check_short(words)
        hashes = self._ngram_hashes(words)
        found: Contamination | None = None
        for name, known in self._hashes.items():
            if not known.size:
                continue
            pos = np.minimum(np.searchsorted(known, hashes), known.size - 1)
            hit = known[pos] == hashes
            matched = int(np.count_nonzero(hit))
            if not matched:
                continue
            fraction = matched / len(hashes)
            if fraction < self.overlap or (found is not None and fraction <= found.overlap):
                continue
            first = int(np.argmax(hit))
            evidence = " ".join(words[first : first + self.ngram])
            found = Contamination(name, fraction, matched, evidence)
        return found

    def _check_short(self, words: list[str]) -> Contamination | None:
        """The longest short benchmark prompt ``words`` contains (ties: the leftmost)."""
        for size in range(min(len(words), self._longest_short), 0, -1):
            fraction = size / len(words)
            if fraction < self.overlap:
                return None
            for start in range(len(words) - size + 1):
                run = " ".join(words[start : start + size])
                name = self._short.get(run)
                if name is not None:
                    return Contamination(name, fraction, 1, run)
        return None

    def _ngram_hashes(self, words: list[str]) -> NDArray[np.uint64]:
        """A 64-bit hash per n-gram (in text order), from stable per-word hashes."""
        cache = self._word_hashes
        if len(cache) > _WORD_CACHE:
            cache.clear()
        values = []
        for word in words:
            h = cache.get(word)
            if h is None:
                h = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest())
                cache[word] = h
            values.append(h)
        per_word = np.array(values, dtype=np.uint64)
        count = len(words) - self.ngram + 1
        out = np.zeros(count, dtype=np.uint64)
        for j in range(self.ngram):  # wraps around mod 2**64
            out = out * _PRIME + per_word[j : j + count]
        return out
