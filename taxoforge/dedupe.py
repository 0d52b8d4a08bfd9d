"""Duplicate instructions within a job, across every replica at once.

Each instruction claims keys in the item store with ``create`` (first writer wins): one for its
normalized text (exact duplicates) and one per MinHash band of its word shingles (near
duplicates: a shared band makes two texts candidates, then their signatures' Jaccard estimate
decides). The first text keeps its claims; a later one that collides is a duplicate.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from taxoforge.v1 import common_pb2 as pb

if TYPE_CHECKING:
    from datasketch import MinHash

__all__ = [
    "ClaimStore",
    "DuplicateIndex",
    "exact_jaccard",
    "jaccard",
    "minhash",
    "minhash_batch",
    "minhash_flat",
    "mix64",
    "normalize_text",
    "shingle_array",
    "shingle_hashes",
    "shingle_page",
    "shingles",
    "signature",
    "word_hashes",
    "words_of",
]

_PERMUTATIONS = 60
# 10 bands of 6 rows: a pair at Jaccard 0.8 shares a band 95% of the time, at 0.9 99.8%;
# every band is one claim per instruction, so fewer bands cost fewer round trips.
_BANDS = 10
_WORD = re.compile(r"\w+")


def normalize_text(text: str) -> str:
    """Case, accents' encoding, punctuation and spacing folded."""
    return " ".join(words_of(text))


def shingles(text: str) -> set[str]:
    """The word shingles similarity is measured on: word bigrams of the normalized text (its
    words, for a text of fewer than three)."""
    words = normalize_text(text).split()
    if len(words) < 3:
        return set(words)
    return {" ".join(words[i : i + 2]) for i in range(len(words) - 1)}


_shingles = shingles


def words_of(text: str) -> list[str]:
    """The words of :func:`normalize_text` (its text is these joined by single spaces)."""
    if text.isascii():  # the same words, without the regex: NFKC and casefold change no ASCII
        return text.lower().translate(_ASCII_NON_WORD).split()
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


# ASCII characters that are not word characters (``\w``), as spaces.
_ASCII_NON_WORD = str.maketrans(
    {chr(c): " " for c in range(128) if not (chr(c).isalnum() or chr(c) == "_")}
)


# Words hashed so far (blake2b, 8 bytes): a corpus repeats its vocabulary, so each word is
# hashed once; cleared when it grows past this many (the values never change).
_WORD_CACHE = 1 << 20
_word_cache: dict[str, int] = {}


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest())


def word_hashes(words: Sequence[str]) -> NDArray[np.uint64]:
    """A stable 64-bit hash of each word (blake2b), in order."""
    cache = _word_cache
    try:
        return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))
    except KeyError:
        pass
    if len(cache) > _WORD_CACHE:
        cache.clear()
    # Only the words not seen yet are hashed; a local copy keeps them if another thread
    # clears the cache meanwhile.
    fresh = {word: _word_hash(word) for word in set(words).difference(cache)}
    cache.update(fresh)
    try:  # every word is cached now, unless another thread cleared it meanwhile
        return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))
    except KeyError:
        pass
    get = cache.get

    def _lookup(word: str) -> int:
        h = get(word)
        if h is None:
            h = fresh.get(word)
        return _word_hash(word) if h is None else h

    return np.fromiter(map(_lookup, words), dtype=np.uint64, count=len(words))


# Odd 64-bit constants (splitmix64's): mixing is a bijection of 64-bit integers.
_M1, _M2, _M3 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(31)
_PAIR = np.uint64(0x9E3779B97F4A7C15)
_UNIGRAM = np.uint64(0xD6E8FEB86659FD93)


def mix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finalizer over an array: a bijection that spreads every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    out: NDArray[np.uint64] = x ^ (x >> _M3)
    return out


def shingle_array(words: Sequence[str]) -> NDArray[np.uint64]:
    """A 64-bit hash per word shingle of normalized ``words`` (``shingles``' sets: bigrams, or
    the words of a text of fewer than three), in text order, repeats kept. Computed from the
    words' hashes, so a text costs one dictionary look-up a word, not a hash a shingle."""
    h = word_hashes(words)
    if h.size < 3:
        return mix64(h ^ _UNIGRAM)
    return mix64(h[:-1] * _PAIR + mix64(h[1:]))


def shingle_hashes(text: str) -> NDArray[np.uint64]:
    """The text's shingles as sorted, distinct 64-bit hashes: 8 bytes a shingle to keep, and
    the exact Jaccard of two texts is that of their arrays (up to 64-bit collisions)."""
    out: NDArray[np.uint64] = np.unique(shingle_array(words_of(text)))
    return out


def shingle_page(texts: Sequence[Sequence[str]]) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """``shingle_array`` of each of many texts' words in one vectorised pass: every shingle
    hash, in text order, and the index of the text it belongs to."""
    lengths = np.fromiter((len(w) for w in texts), dtype=np.int64, count=len(texts))
    h = word_hashes([word for words in texts for word in words])
    owner = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    if not h.size:
        return h, owner
    # Pairs (i, i + 1) inside a text of 3 words or more; the words of a shorter text.
    long = lengths[owner] >= 3
    pairs = mix64(h[:-1] * _PAIR + mix64(h[1:]))
    take_pair = long[:-1] & (owner[:-1] == owner[1:])
    single = mix64(h[~long] ^ _UNIGRAM)
    values = np.empty(int(take_pair.sum()) + single.size, dtype=np.uint64)
    who = np.empty(values.size, dtype=np.int64)
    # Each text's shingles stay together and in order: a pair sits at its first word's place.
    position = np.concatenate([np.flatnonzero(take_pair), np.flatnonzero(~long)])
    order = np.argsort(position, kind="stable")
    values[:] = np.concatenate([pairs[take_pair], single])[order]
    who[:] = owner[position][order]
    return values, who


_EMPTY = np.uint64(0)
_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)
# Densifying an empty bin tries this many seeded bins before taking the next full one.
_DENSIFY_TRIES = 16


def minhash_batch(sets: Sequence[NDArray[np.uint64]], width: int, seed: int) -> NDArray[np.uint64]:
    """A ``width``-value MinHash signature of each set of 64-bit hashes, all in one pass.

    One permutation hashing with optimal densification (Shrivastava, ICML 2017): each element
    is hashed once (seeded) and falls in one of ``width`` bins, a bin keeps its smallest value,
    and an empty bin borrows the value of a bin drawn by a seeded sequence fixed per bin (the
    same for every set), so two sets agree in a given position with probability their Jaccard
    similarity, as with ``width`` independent permutations, for a hash per element instead of
    ``width``. An empty set counts as the set of one fixed element.
    """
    sizes = np.fromiter((s.size for s in sets), dtype=np.int64, count=len(sets))
    flat = np.concatenate(list(sets)) if sets else np.empty(0, dtype=np.uint64)
    owner = np.repeat(np.arange(len(sets), dtype=np.int64), sizes)
    return minhash_flat(flat, owner, len(sets), width, seed)


def minhash_flat(
    flat: NDArray[np.uint64], owner: NDArray[np.int64], rows: int, width: int, seed: int
) -> NDArray[np.uint64]:
    """``minhash_batch`` of ``rows`` sets given as one array of elements and the set each
    belongs to (``owner``, in any order): the same signatures, without a list of arrays."""
    sig = np.full((rows, width), _FULL, dtype=np.uint64)
    if not rows:
        return sig
    missing = np.flatnonzero(np.bincount(owner, minlength=rows) == 0)
    if missing.size:  # an empty set: the set of one fixed element
        flat = np.concatenate([flat, np.full(missing.size, _EMPTY, dtype=np.uint64)])
        owner = np.concatenate([owner, missing])
    salt = np.uint64((seed * int(_PAIR) + int(_UNIGRAM)) & 0xFFFFFFFFFFFFFFFF)
    h = mix64(flat ^ salt)
    bins = ((h >> np.uint64(32)) * np.uint64(width)) >> np.uint64(32)
    values = mix64(h)
    np.minimum.at(sig.reshape(-1), owner * width + bins.astype(np.int64), values)
    empty = sig == _FULL
    if empty.any():
        held = sig.copy()
        er, ej = np.nonzero(empty)
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, width, size=(_DENSIFY_TRIES, width))
        left = np.ones(er.size, dtype=bool)
        for t in range(_DENSIFY_TRIES):
            take = held[er, draws[t, ej]]
            hit = left & (take != _FULL)
            sig[er[hit], ej[hit]] = take[hit]
            left &= ~hit
            if not left.any():
                break
        # Sets with only a few full bins: the next full bin to the right (circularly).
        for step in range(1, width):
            if not left.any():
                break
            take = held[er, (ej + step) % width]
            hit = left & (take != _FULL)
            sig[er[hit], ej[hit]] = take[hit]
            left &= ~hit
    return sig


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two ``shingle_hashes`` arrays; two empty texts are the same (1.0)."""
    if not a.size and not b.size:
        return 1.0
    shared = np.intersect1d(a, b, assume_unique=True).size
    return shared / (a.size + b.size - shared)


@functools.cache
def _template() -> MinHash:
    """A MinHash to copy: building one draws its permutations; copying one does not.

    datasketch is imported here, not with the module: it loads scipy (~57 MiB and ~0.4 s a
    process), and only the generator's duplicate index uses it; the selector and each of its
    screening workers import this module for the hashing above alone."""
    from datasketch import MinHash

    return MinHash(num_perm=_PERMUTATIONS, seed=7)


def minhash(text: str) -> MinHash:
    """The MinHash of the text's word bigrams (60 permutations, fixed seed)."""
    mh = _template().copy()
    mh.update_batch([shingle.encode("utf-8") for shingle in _shingles(text)])
    return mh


def signature(text: str) -> np.ndarray:
    """A MinHash signature of the text's word bigrams (60 permutations, fixed seed)."""
    return np.asarray(minhash(text).hashvalues, dtype=np.uint64)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """The Jaccard similarity two signatures estimate."""
    return float(np.mean(a == b))


class ClaimStore(Protocol):
    """What the index needs of the item store: first-writer-wins claims, and raw values."""

    async def claim(self, key: str, owner: str) -> str: ...

    async def put_raw(self, key: str, value: bytes, wait: bool = True) -> None: ...

    async def get_raw(self, key: str) -> bytes | None: ...


class DuplicateIndex:
    """Claims of a job's instructions; ``claim`` says whether a text is new.

    Two rounds of ``create`` per text: the exact text's claim, then every band's at once. A
    band's claim carries its claimant's signature, so whoever loses it reads the signature in
    the same reply (this was three rounds, a separate signature write and a read per colliding
    band). The band claims wait for the exact claim so that a text's exact duplicate claims
    nothing more and no band names an item whose text was turned down as a copy.
    """

    def __init__(self, items: ClaimStore) -> None:
        self._items = items
        _template()  # datasketch loaded with the service, not on its loop at the first claim

    async def claim(
        self, job_id: str, item_id: str, text: str, threshold: float
    ) -> pb.Rejection | None:
        """Claim ``text`` for ``item_id``; a Rejection if another item of the job has it (or,
        with ``threshold`` > 0, a text at least that similar)."""
        exact = hashlib.sha256(normalize_text(text).encode()).hexdigest()[:40]
        owner = await self._claim(f"{job_id}.dedup.x.{exact}", item_id)
        if owner != item_id:
            return pb.Rejection(reason="duplicate", text=text, detail=f"same text as {owner}")
        if threshold <= 0:
            return None
        sig = signature(text)
        mine = _band_value(item_id, sig)
        rows = _PERMUTATIONS // _BANDS
        bands = [
            hashlib.sha256(sig[b * rows : (b + 1) * rows].tobytes()).hexdigest()[:24]
            for b in range(_BANDS)
        ]
        holders = await asyncio.gather(
            *(self._claim(f"{job_id}.dedup.b{b}.{h}", mine) for b, h in enumerate(bands))
        )
        others: dict[str, np.ndarray | None] = {}
        for holder in holders:
            other, other_sig = _parse_band_value(holder)
            if other != item_id:  # an earlier draft of this item is not another text
                others.setdefault(other, other_sig)
        for other in sorted(others):
            other_sig = others[other]
            if other_sig is None:  # a claim of the old format: the signature is stored apart
                blob = await self._items.get_raw(f"{job_id}.dedup.s.{other}")
                if blob is None:
                    continue
                other_sig = np.frombuffer(blob, dtype=np.uint64)
            similarity = jaccard(sig, other_sig)
            if similarity >= threshold:
                return pb.Rejection(
                    reason="near_duplicate",
                    text=text,
                    detail=f"{similarity:.2f} similar to {other}",
                )
        return None

    async def _claim(self, key: str, owner: str) -> str:
        return await self._items.claim(key, owner)


def _band_value(item_id: str, sig: np.ndarray) -> str:
    """A band claim's value: the claimant and its signature."""
    return f"{item_id}|{base64.b64encode(sig.astype(np.uint64).tobytes()).decode()}"


def _parse_band_value(value: str) -> tuple[str, np.ndarray | None]:
    """(item, signature) of a band claim; a bare item id (no signature) is the old format."""
    item_id, sep, encoded = value.rpartition("|")
    if not sep:
        return value, None
    return item_id, np.frombuffer(base64.b64decode(encoded), dtype=np.uint64)
