"""Duplicates inside an import, and overlap with benchmark prompts, in memory.

``Deduplicator`` finds exact duplicates (the same normalized record) and near duplicates
(candidates from a MinHash LSH index tuned for recall, each confirmed by the exact word-shingle
Jaccard of :func:`taxoforge.dedupe.exact_jaccard` before anything is dropped).
``Decontaminator`` finds training texts that share word n-grams with registered benchmark
prompts, the GLAN/GPT-3 style of decontamination.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from taxoforge.dedupe import (
    exact_jaccard,
    minhash_flat,
    mix64,
    normalize_text,
    shingle_hashed,
    texts_word_hashes,
    word_hashes,
    words_of,
)

__all__ = [
    "DEDUP_MODES",
    "Contamination",
    "Decontaminator",
    "DedupFeatures",
    "Deduplicator",
    "Record",
]

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
    for rows in range(1, width // 2 + 1):  # 2 bands at least (as datasketch's LSH had)
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


# A record to check: (item_id, instruction, answer or None, context).
Record = tuple[str, str, str | None, str]
# Salts that keep the parts' shingles apart in the MinHash (an instruction's shingle is not
# its answer's); the multiplier folds a band's values into one 64-bit key.
_PART_SALT = np.array([0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0], dtype=np.uint64)
_BAND_MULT = np.uint64(0x9E3779B97F4A7C15)


class _BandIndex:
    """Band keys of remembered records and who has them: sorted runs of (key, record),
    merged as they grow (the new run takes in the last one while that is less than twice its
    size, so each run is at least twice the next), so adding n keys costs O(n log n) in all
    and a look-up searches O(log n) runs."""

    def __init__(self) -> None:
        self._runs: list[tuple[NDArray[np.uint64], NDArray[np.int64]]] = []

    def add(self, keys: NDArray[np.uint64], owners: NDArray[np.int64]) -> None:
        while self._runs and self._runs[-1][0].size < 2 * keys.size:
            older_keys, older_owners = self._runs.pop()
            keys = np.concatenate([older_keys, keys])
            owners = np.concatenate([older_owners, owners])
        order = np.argsort(keys, kind="stable")
        self._runs.append((keys[order], owners[order]))

    def lookup(self, keys: NDArray[np.uint64]) -> list[NDArray[np.int64]]:
        """For each row of ``keys`` (a record's band keys), the records that share one (in
        no particular order).

        The keys are searched in sorted order (each search starts where the last ended), once
        per run for where a key would be; only the few keys found are searched again for
        where their equal keys end.
        """
        flat = keys.ravel()
        order = np.argsort(flat)
        needles = flat[order]
        rows = order // keys.shape[1]
        found_rows: list[NDArray[np.int64]] = []
        found: list[NDArray[np.int64]] = []
        for run_keys, run_owners in self._runs:
            if not run_keys.size:
                continue
            lo = np.searchsorted(run_keys, needles, side="left")
            at = np.minimum(lo, run_keys.size - 1)
            hit = np.flatnonzero(run_keys[at] == needles)
            if not hit.size:
                continue
            start = lo[hit]
            hits = np.searchsorted(run_keys, needles[hit], side="right") - start
            which = np.repeat(hit, hits)
            within = np.arange(int(hits.sum())) - np.repeat(np.cumsum(hits) - hits, hits)
            found_rows.append(rows[which])
            found.append(run_owners[np.repeat(start, hits) + within])
        if not found:
            return [np.empty(0, dtype=np.int64)] * keys.shape[0]
        by_row = np.concatenate(found_rows)
        owners = np.concatenate(found)
        order = np.argsort(by_row, kind="stable")
        ends = np.cumsum(np.bincount(by_row, minlength=keys.shape[0]))
        return np.split(owners[order], ends[:-1])


def _shares_a_key(acc: NDArray[np.uint64]) -> NDArray[np.bool_]:
    """For each row of band keys, whether one of its keys is also in another row."""
    flat = acc.ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    same = ordered[1:] == ordered[:-1]
    repeated = np.zeros(flat.size, dtype=bool)
    repeated[order[1:][same]] = True
    repeated[order[:-1][same]] = True
    out: NDArray[np.bool_] = np.any(repeated.reshape(acc.shape), axis=1)
    return out


@dataclass
class DedupFeatures:
    """A page's records as dedup compares them (``Deduplicator.features``): each record's
    exact key and, with near-dedup on, all its parts' shingle hashes in one array (record
    by record, part by part; ``ends`` closes each part) and its LSH band keys."""

    keys: list[bytes]
    values: NDArray[np.uint64] | None = None
    ends: NDArray[np.int64] | None = None
    acc: NDArray[np.uint64] | None = None


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

    ``check_many`` takes a page of records: each record's text is normalized and its shingles
    hashed once (a dictionary look-up a word), and the page's MinHash signatures are computed
    in one numpy pass (:func:`taxoforge.dedupe.minhash_flat`); the decisions are then taken
    in order, exactly as one ``check`` at a time would.
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
        # Records whose parts are held sorted and distinct already (a record is made so when it
        # is first compared: most never are).
        self._distinct: set[int] = set()
        # LSH: every remembered record's band keys, (band, band's values) folded into 64 bits,
        # in sorted arrays (16 bytes a key, where a dict takes ~100). A folding collision only
        # adds a candidate, which the exact Jaccard then turns down.
        self._index = _BandIndex()
        self._banding = _bands(near_threshold, _PERMUTATIONS) if near_threshold > 0 else None

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
        return self.check_many([(item_id, text, response, context)])[0]

    def check_many(
        self, records: Sequence[Record], words: Callable[[str], list[str]] = words_of
    ) -> list[tuple[str, str] | None]:
        """``check`` of each record in turn (a later one is compared with the earlier ones
        of the same page too); one result per record. ``words``: ``words_of``, or a cache of
        it shared with the caller."""
        return self.decide([record[0] for record in records], self.features(records, words))

    def features(
        self, records: Sequence[Record], words: Callable[[str], list[str]] = words_of
    ) -> DedupFeatures:
        """What ``decide`` needs of a page of records, made without this index: it depends
        on the records and the settings only, so another process (a ``Deduplicator`` with the
        same settings) can make it while this one decides an earlier page."""
        parts_of: list[list[list[str]]] = []
        texts: list[str] = []  # every record's parts, in turn
        keys: list[bytes] = []
        for _, text, response, context in records:
            parts = [text, context, response or ""] if self.mode == "record" else [text, context]
            texts.extend(parts)
            split = [words(p) for p in parts]
            parts_of.append(split)
            keys.append(_digest("\x00".join(" ".join(w) for w in split)))
        if self._banding is None or not records:
            return DedupFeatures(keys)
        # Every part's shingle hashes (repeats and all: sorting a page's shingles by part
        # costs more than the rest of dedup, so a part is made a set only when an exact
        # Jaccard needs it, for a candidate; the MinHash does not mind repeats).
        width = len(parts_of[0])
        lengths = np.fromiter((len(w) for parts in parts_of for w in parts), np.int64, len(texts))
        values, part = shingle_hashed(texts_word_hashes(texts, words), lengths)
        ends = np.cumsum(np.bincount(part, minlength=len(records) * width))
        tagged = mix64(values ^ _PART_SALT[part % width])
        sig = minhash_flat(tagged, part // width, len(records), _PERMUTATIONS, _SEED)
        count, rows = self._banding
        folded = sig[:, : count * rows].reshape(len(records), count, rows)
        acc = np.zeros((len(records), count), dtype=np.uint64)
        for r in range(rows):  # wraps around mod 2**64
            acc = acc * _BAND_MULT + folded[:, :, r]
        acc = mix64(acc ^ np.arange(count, dtype=np.uint64))
        return DedupFeatures(keys, values, ends, acc)

    def decide(self, ids: Sequence[str], features: DedupFeatures) -> list[tuple[str, str] | None]:
        """The verdicts of the records with these item ids, in order, from their ``features``
        (all the deciding needs of a record besides its id): each is remembered when it is
        new, so a later record (of this page or the next) is compared with it."""
        keys = features.keys
        hashed: list[tuple[NDArray[np.uint64], ...]] = []
        if self._banding is not None and ids:
            if features.acc is None or features.values is None or features.ends is None:
                raise ValueError("features made with near-dedup off, decided with it on")
            width = len(features.ends) // len(ids)
            # Each part's values, sliced directly (np.split costs two axis swaps a piece).
            values, ends = features.values, features.ends.tolist()
            pieces = [values[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]
            hashed = [tuple(pieces[i * width : (i + 1) * width]) for i in range(len(ids))]
            acc = features.acc
            earlier = self._index.lookup(acc)
            # Keys of this page's remembered records (earlier pages' are in the index), kept
            # only for records that share a key with another of the page: no other record
            # could find the rest by them (most records, whose band keys are then not walked).
            shared = _shares_a_key(acc)
            page_keys: dict[int, list[int]] = {}
            remembered: list[int] = []
        out: list[tuple[str, str] | None] = []
        for i, item_id in enumerate(ids):
            owner = self._exact.get(keys[i])
            if owner is not None:
                if self._ids[owner] == item_id:
                    out.append(None)
                else:
                    out.append(("duplicate", f"same text as {self._ids[owner]}"))
                continue
            index = len(self._ids)
            if self._banding is not None:
                mine = hashed[i]
                candidates = set(earlier[i].tolist()) if earlier[i].size else set()
                bands = acc[i].tolist() if shared[i] else []
                for key in bands:
                    candidates.update(page_keys.get(key, ()))
                if candidates:
                    mine = _distinct(mine)
                    found = self._near(mine, candidates)
                    if found is not None:
                        out.append(self._near_detail(mine, found))
                        continue
                    self._distinct.add(index)
                self._parts.append(mine)
                remembered.append(i)
                for key in bands:
                    page_keys.setdefault(key, []).append(index)
            self._exact[keys[i]] = index
            self._ids.append(item_id)
            out.append(None)
        if self._banding is not None and ids and remembered:
            count = self._banding[0]
            first_new = len(self._ids) - len(remembered)
            self._index.add(
                acc[remembered].ravel(),
                np.repeat(np.arange(first_new, len(self._ids), dtype=np.int64), count),
            )
        return out

    def _near_detail(
        self, mine: tuple[NDArray[np.uint64], ...], found: tuple[int, float, list[float]]
    ) -> tuple[str, str]:
        other, similarity, each = found
        theirs = self._parts[other]
        shown = ", ".join(
            f"{name} {value:.3f}"
            for i, (name, value) in enumerate(zip(_PARTS, each, strict=False))
            if mine[i].size or theirs[i].size  # a part neither record has: unsaid
        )
        return (
            "near_duplicate",
            f"{similarity:.3f} similar to {self._ids[other]} (exact word-shingle "
            f"Jaccard; {shown}; threshold {self.near_threshold:g})",
        )

    def _near(
        self, parts: tuple[NDArray[np.uint64], ...], candidates: set[int]
    ) -> tuple[int, float, list[float]] | None:
        """The most similar of the ``candidates`` (remembered records) with every part at or
        above the threshold by exact Jaccard (ties: the earliest): (index, smallest part's
        Jaccard, each part's). ``parts`` are sorted and distinct (``_distinct``)."""
        best: tuple[int, float, list[float]] | None = None
        for other in sorted(candidates):
            each: list[float] = []
            if other not in self._distinct:  # made distinct once, the first time it is needed
                self._parts[other] = _distinct(self._parts[other])
                self._distinct.add(other)
            for mine, theirs in zip(parts, self._parts[other], strict=True):
                each.append(exact_jaccard(mine, theirs))
                if each[-1] < self.near_threshold:
                    break
            else:
                similarity = min(each)
                if best is None or similarity > best[1]:
                    best = (other, similarity, each)
        return best


def _distinct(parts: tuple[NDArray[np.uint64], ...]) -> tuple[NDArray[np.uint64], ...]:
    """Each part's shingle hashes sorted and distinct, as ``exact_jaccard`` takes them."""
    return tuple(np.unique(part) for part in parts)


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

    def check_many(
        self, texts: Sequence[Sequence[str]], words: Callable[[str], list[str]] = words_of
    ) -> list[Contamination | None]:
        """``check`` of each text, given as its parts (checked as ``"\\n".join(parts)``, whose
        words are the parts' words in turn), the n-grams of all of them hashed and looked up
        at once. ``words``: ``words_of``, or a cache of it shared with the caller."""
        out: list[Contamination | None] = [None] * len(texts)
        long: list[int] = []
        sizes: list[int] = []
        for i, parts in enumerate(texts):
            size = sum(len(words(part)) for part in parts)
            if size >= self.ngram:
                long.append(i)
                sizes.append(size)
            elif size:
                out[i] = self._check_short([w for part in parts for w in words(part)])
        if not long or not any(known.size for known in self._hashes.values()):
            return out
        lengths = np.array(sizes, dtype=np.int64)
        per_word = texts_word_hashes([part for i in long for part in texts[i]], words)
        count = per_word.size - self.ngram + 1
        rolled = np.zeros(count, dtype=np.uint64)
        for j in range(self.ngram):  # wraps around mod 2**64
            rolled = rolled * _PRIME + per_word[j : j + count]
        # The n-grams that start and end in the same text, grouped by text in text order.
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        grams = lengths - self.ngram + 1
        offset = np.repeat(starts, grams) + (
            np.arange(int(grams.sum())) - np.repeat(np.cumsum(grams) - grams, grams)
        )
        hashes = rolled[offset]
        owner = np.repeat(np.arange(len(long)), grams)
        first_of = np.cumsum(grams) - grams
        found: dict[int, Contamination] = {}
        for name, known in self._hashes.items():
            if not known.size:
                continue
            pos = np.minimum(np.searchsorted(known, hashes), known.size - 1)
            hit = known[pos] == hashes
            where = np.flatnonzero(hit)
            if not where.size:
                continue
            texts_hit, first = np.unique(owner[where], return_index=True)
            matched = np.bincount(owner[where], minlength=len(long))
            for t, at in zip(texts_hit.tolist(), where[first].tolist(), strict=True):
                fraction = int(matched[t]) / int(grams[t])
                best = found.get(t)
                if fraction < self.overlap or (best is not None and fraction <= best.overlap):
                    continue
                local = at - int(first_of[t])
                split = [w for part in texts[long[t]] for w in words(part)]
                evidence = " ".join(split[local : local + self.ngram])
                found[t] = Contamination(name, fraction, int(matched[t]), evidence)
        for t, hit_ in found.items():
            out[long[t]] = hit_
        return out

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
        """A 64-bit hash per n-gram (in text order), from stable per-word hashes (blake2b,
        cached across texts and shared with dedup's shingles)."""
        per_word = word_hashes(words)
        count = len(words) - self.ngram + 1
        out = np.zeros(count, dtype=np.uint64)
        for j in range(self.ngram):  # wraps around mod 2**64
            out = out * _PRIME + per_word[j : j + count]
        return out
