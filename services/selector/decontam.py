"""Duplicates inside an import, and overlap with benchmark prompts, in memory.

``Deduplicator`` finds exact duplicates (the same normalized record) and near duplicates
(candidates from a MinHash LSH index tuned for recall, each confirmed by the exact word-shingle
Jaccard of :func:`taxoforge.dedupe.exact_jaccard` before anything is dropped).
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

from taxoforge.dedupe import exact_jaccard, normalize_text, shingle_hashes, shingles

__all__ = ["DEDUP_MODES", "Contamination", "Decontaminator", "Deduplicator"]

# What makes two records the same: the whole record (query and answer: a dataset holding two
# answers per prompt keeps both for quality selection to choose from), or the query alone.
DEDUP_MODES = ("record", "query")

# Permutations of the LSH signatures. The LSH only proposes candidates: every one is confirmed
# by the exact Jaccard, so the estimate's error never drops a pair below the threshold; what the
# permutations and bands decide is how rarely a pair at the threshold is missed.
_PERMUTATIONS = 128
_SEED = 7
# The banding misses a pair exactly at the threshold at most this often (more often than not
# far less: pairs above it are found more surely still); among the bandings that do, the one
# with the fewest false candidates below the threshold (each costs one exact comparison).
_MAX_MISS_AT_THRESHOLD = 1e-3
# The parts of a record compared apart, tagged so that their shingles never meet in the index.
_PARTS = ("instruction", "input", "response")


def _bands(threshold: float, width: int) -> tuple[int, int]:
    """The LSH (bands, rows per band) for ``threshold`` and ``width`` permutations: the fewest
    false candidates (area under the S-curve below the threshold) among the bandings that miss
    a pair at the threshold at most ``_MAX_MISS_AT_THRESHOLD`` of the time (if none can, the
    one that misses least)."""
    below = np.linspace(0.0, threshold, 201)
    best: tuple[float, float, int, int] | None = None
    for rows in range(1, width // 2 + 1):  # datasketch wants 2 bands at least
        bands = width // rows
        miss = (1.0 - threshold**rows) ** bands
        false_pos = float(np.trapezoid(1.0 - (1.0 - below**rows) ** bands, below))
        key = (max(miss, _MAX_MISS_AT_THRESHOLD), false_pos, bands, rows)
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    return best[2], best[3]


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


class Deduplicator:
    """Exact and near-duplicate records over a batch (a whole import), in memory.

    A record is compared part by part: its instruction, the input it is about when the row
    gives one apart (Alpaca's ``input``), and in "record" mode its answer. Exact: the same
    normalized parts (:func:`taxoforge.dedupe.normalize_text`: case, punctuation and spacing do
    not matter). Near: every part at least ``near_threshold`` similar by the exact Jaccard of
    its word shingles, so two tasks on the same long input (different instructions) are not
    near duplicates, nor are two answers to one prompt in "record" mode. Candidates come from a
    MinHash LSH over all the parts' tagged shingles (whose Jaccard is at least the smallest
    part's, so no candidate that could pass is left out by it). The first record of a group is
    new; later ones are its duplicates and are not remembered.
    """

    def __init__(self, near_threshold: float, mode: str = "record") -> None:
        """``near_threshold`` in (0, 1]: Jaccard similarity at which two records are near
        duplicates; 0 finds exact duplicates only. ``mode``: "record" or "query"."""
        if not 0.0 <= near_threshold <= 1.0:
            raise ValueError(f"near_threshold must be in [0, 1], got {near_threshold}")
        if mode not in DEDUP_MODES:
            raise ValueError(f"dedup mode must be one of {', '.join(DEDUP_MODES)}, got {mode!r}")
        self.near_threshold = near_threshold
        self.mode = mode
        self._exact: dict[bytes, int] = {}
        self._ids: list[str] = []
        self._parts: list[tuple[NDArray[np.uint64], ...]] = []
        self._lsh: MinHashLSH | None = None
        self._template: MinHash | None = None
        if near_threshold > 0:
            self._lsh = MinHashLSH(
                threshold=near_threshold,
                num_perm=_PERMUTATIONS,
                params=_bands(near_threshold, _PERMUTATIONS),
            )
            self._template = MinHash(num_perm=_PERMUTATIONS, seed=_SEED)

    def __len__(self) -> int:
        """How many distinct records are remembered."""
        return len(self._ids)

    def check(
        self, item_id: str, text: str, response: str | None = None, context: str = ""
    ) -> tuple[str, str] | None:
        """None if the record is new (it is remembered from now on); else (reason, detail).

        ``text`` is the instruction (the query without ``context``, the input it is about);
        ``response`` the answer, compared in "record" mode only. reason is "duplicate"
        (detail "same text as <item_id>") or "near_duplicate" (detail "<exact Jaccard>
        similar to <item_id> (...)", the smallest of the parts' exact word-shingle Jaccard,
        each part's listed), naming the earlier record it repeats; among several near ones,
        the most similar (ties: the earliest). Checking a remembered item again under its own
        id is not a duplicate.
        """
        parts = [text, context]
        if self.mode == "record":
            parts.append(response or "")
        key = _digest("\x00".join(normalize_text(p) for p in parts))
        owner = self._exact.get(key)
        if owner is not None:
            if self._ids[owner] == item_id:
                return None
            return "duplicate", f"same text as {self._ids[owner]}"
        index = len(self._ids)
        if self._lsh is not None and self._template is not None:
            hashed = tuple(shingle_hashes(p) for p in parts)
            minhash = self._template.copy()
            tagged = [
                f"{name}:{shingle}".encode()
                for name, part in zip(_PARTS, parts, strict=False)
                for shingle in shingles(part)
            ]
            minhash.update_batch(tagged or [b""])
            found = self._near(hashed, minhash)
            if found is not None:
                other, similarity, each = found
                theirs = self._parts[other]
                shown = ", ".join(
                    f"{name} {value:.3f}"
                    for i, (name, value) in enumerate(zip(_PARTS, each, strict=False))
                    if hashed[i].size or theirs[i].size  # a part neither record has: unsaid
                )
                return (
                    "near_duplicate",
                    f"{similarity:.3f} similar to {self._ids[other]} (exact word-shingle "
                    f"Jaccard; {shown}; threshold {self.near_threshold:g})",
                )
            self._parts.append(hashed)
            self._lsh.insert(index, minhash, check_duplication=False)
        self._exact[key] = index
        self._ids.append(item_id)
        return None

    def _near(
        self, parts: tuple[NDArray[np.uint64], ...], minhash: MinHash
    ) -> tuple[int, float, list[float]] | None:
        """The most similar remembered record with every part at or above the threshold by
        exact Jaccard (ties: the earliest): (index, smallest part's Jaccard, each part's)."""
        assert self._lsh is not None
        best: tuple[int, float, list[float]] | None = None
        for other in sorted(int(c) for c in self._lsh.query(minhash)):
            each: list[float] = []
            for mine, theirs in zip(parts, self._parts[other], strict=True):
                each.append(exact_jaccard(mine, theirs))
                if each[-1] < self.near_threshold:
                    break
            else:
                similarity = min(each)
                if best is None or similarity > best[1]:
                    best = (other, similarity, each)
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
