"""Duplicate instructions within a job, across every replica at once.

Each instruction claims the key of its normalized text in the item store with ``create``
(first writer wins): a text whose key another item holds is an exact duplicate. The claim
carries the text's MinHash signature; every process follows the job's claims in the order
they were written and finds a near duplicate among the claims made before its own (see
:class:`DuplicateIndex`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import heapq
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

from taxoforge.errors import TransientError
from taxoforge.v1 import common_pb2 as pb

if TYPE_CHECKING:
    from datasketch import MinHash

__all__ = [
    "ClaimStore",
    "DuplicateIndex",
    "WordMemo",
    "exact_jaccard",
    "jaccard",
    "minhash",
    "minhash_batch",
    "minhash_flat",
    "mix64",
    "normalize_text",
    "shingle_array",
    "shingle_hashed",
    "shingle_hashes",
    "shingles",
    "signature",
    "texts_word_hashes",
    "word_hashes",
    "words_of",
]

_PERMUTATIONS = 60
# 10 bands of 6 rows: a pair at Jaccard 0.8 shares a band 95% of the time, at 0.9 99.8%.
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


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest())


class _WordHashes(dict[str, int]):
    """Words hashed so far (blake2b, 8 bytes): a corpus repeats its vocabulary, so each word
    is hashed once, the first time it is looked up (a hit is the dictionary's own C look-up;
    only a miss comes back to Python)."""

    def __missing__(self, word: str) -> int:
        h = self[word] = _word_hash(word)
        return h


# Cleared when it grows past this many words (the values never change, so a thread that
# clears it while another reads only makes that one hash some words again).
_WORD_CACHE = 1 << 20
_word_cache = _WordHashes()


def word_hashes(words: Sequence[str]) -> NDArray[np.uint64]:
    """A stable 64-bit hash of each word (blake2b), in order."""
    cache = _word_cache
    if len(cache) > _WORD_CACHE:
        cache.clear()
    return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))


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


class WordMemo:
    """``words_of`` and ``word_hashes`` of each text, each made once: the checks of a page
    (dedup's shingles, the benchmark n-grams) read the same texts. Call it for a text's words
    (it stands in for ``words_of``); :meth:`hashes` for their hashes."""

    def __init__(self) -> None:
        self._words: dict[str, list[str]] = {}
        self._hashes: dict[str, NDArray[np.uint64]] = {}

    def __call__(self, text: str) -> list[str]:
        found = self._words.get(text)
        if found is None:
            found = self._words[text] = words_of(text)
        return found

    def hashes(self, text: str) -> NDArray[np.uint64]:
        found = self._hashes.get(text)
        if found is None:
            found = self._hashes[text] = word_hashes(self(text))
        return found


def texts_word_hashes(
    texts: Sequence[str], words: Callable[[str], list[str]] = words_of
) -> NDArray[np.uint64]:
    """The word hashes of many texts, text after text, in one array: from a
    :class:`WordMemo`'s own (each text hashed once however many checks read it), else
    hashed here from ``words``' words."""
    if isinstance(words, WordMemo):
        if not texts:
            return np.empty(0, dtype=np.uint64)
        return np.concatenate([words.hashes(text) for text in texts])
    return word_hashes([word for text in texts for word in words(text)])


def shingle_hashed(
    h: NDArray[np.uint64], lengths: NDArray[np.int64]
) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
    """``shingle_array`` of each of many texts in one vectorised pass, the texts given as
    their words' hashes, text after text (``h``), and each text's number of words: every
    shingle hash, in text order, and the index of the text it belongs to."""
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
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
    """What the index needs of the item store: first-writer-wins claims that tell their order,
    and every claim of a job as it is written."""

    async def claim(self, key: str, value: bytes) -> tuple[bytes, int]: ...

    async def follow(
        self, pattern: str, on_entry: Callable[[str, bytes | None, int], None]
    ) -> Callable[[], Awaitable[None]]: ...


class DuplicateIndex:
    """Claims of a job's instructions; ``claim`` says whether a text is new.

    A text makes one claim, with ``create`` (first writer wins), on the key of its normalized
    text; the claim's value is its item and, when near duplicates are looked for, its MinHash
    signature. A text whose key another item holds is an exact duplicate. Otherwise it is a
    near duplicate when a claim made before its own (a lower revision: the bucket's stream
    sequence orders every claim) is at least ``threshold`` similar. Each process reads every
    claim of the jobs it works on as they are written (one ordered consumer a job) into an
    in-memory LSH index (10 bands of 6 rows); a claim waits until the process has read up to
    its own revision, then looks up the earlier claims that share a band with it and compares
    their signatures. Every replica reads the same claims in the same order, so all agree on
    which of two near duplicates came first, and a redelivered claim (its key already held by
    its own item, at the revision it had) gets the same answer again.

    This was a claim per band (11 writes an instruction, two rounds of round trips, and 10
    keys a text left in the bucket); it is one write and one delivery now.
    """

    def __init__(
        self, items: ClaimStore, *, catch_up_s: float = 30.0, idle_s: float = 600.0
    ) -> None:
        self._items = items
        self._catch_up_s = catch_up_s
        self._idle_s = idle_s
        self._jobs: dict[str, _JobClaims] = {}
        self._opening: dict[str, asyncio.Task[_JobClaims]] = {}
        _template()  # datasketch loaded with the service, not on its loop at the first claim

    async def claim(
        self, job_id: str, item_id: str, text: str, threshold: float
    ) -> pb.Rejection | None:
        """Claim ``text`` for ``item_id``; a Rejection if another item of the job has it (or,
        with ``threshold`` > 0, a text at least that similar claimed before it).

        Raises:
            TransientError: this process could not read the job's claims up to its own in
                ``catch_up_s`` (a retry follows them afresh).
        """
        exact = hashlib.sha256(normalize_text(text).encode()).hexdigest()[:40]
        sig = signature(text) if threshold > 0 else None
        held, revision = await self._items.claim(
            f"{job_id}.dedup.x.{exact}", _claim_value(item_id, sig)
        )
        owner, _ = _parse_claim(held)
        if owner != item_id:
            return pb.Rejection(reason="duplicate", text=text, detail=f"same text as {owner}")
        if sig is None:
            return None
        claims = await self._claims(job_id)
        try:
            await claims.reach(revision, self._catch_up_s)
        except TimeoutError:
            await self._drop(job_id, claims)
            raise TransientError(
                f"duplicate check: the job's claims were not read up to {revision} "
                f"in {self._catch_up_s:g} s"
            ) from None
        found = claims.similar(sig, revision, item_id, threshold)
        if found is None:
            return None
        other, similarity = found
        return pb.Rejection(
            reason="near_duplicate", text=text, detail=f"{similarity:.2f} similar to {other}"
        )

    async def close(self) -> None:
        """Stop following every job's claims."""
        for job_id, claims in list(self._jobs.items()):
            await self._drop(job_id, claims)

    async def _claims(self, job_id: str) -> _JobClaims:
        claims = self._jobs.get(job_id)
        if claims is not None:
            claims.used = time.monotonic()
            return claims
        opening = self._opening.get(job_id)
        if opening is None:  # one follower a job, however many claims ask for it at once
            opening = self._opening[job_id] = asyncio.create_task(self._open(job_id))
            opening.add_done_callback(lambda _: self._opening.pop(job_id, None))
        return await asyncio.shield(opening)

    async def _open(self, job_id: str) -> _JobClaims:
        now = time.monotonic()
        for idle_job, idle in list(self._jobs.items()):  # jobs no claim has asked for lately
            if now - idle.used > self._idle_s:
                await self._drop(idle_job, idle)
        claims = _JobClaims()
        claims.stop = await self._items.follow(f"{job_id}.dedup.x.>", claims.add)
        self._jobs[job_id] = claims
        return claims

    async def _drop(self, job_id: str, claims: _JobClaims) -> None:
        if self._jobs.get(job_id) is claims:
            del self._jobs[job_id]
        claims.fail(TransientError("the job's claims are no longer followed here"))
        if claims.stop is not None:
            await claims.stop()


class _JobClaims:
    """One job's claims as this process has read them, in revision order, with an LSH index
    of their signatures."""

    def __init__(self) -> None:
        self.used = time.monotonic()
        self.stop: Callable[[], Awaitable[None]] | None = None
        self.seen = 0  # the highest revision read
        self._items: list[str] = []
        self._revisions: list[int] = []
        # Signatures' low 32 bits: equal values are what similarity counts, and two unequal
        # values agree in them once in 2**32 (half the memory of 64-bit values).
        self._sigs = np.empty((64, _PERMUTATIONS), dtype=np.uint32)
        self._bands = _BandTable()
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._ticket = 0

    def add(self, key: str, value: bytes | None, revision: int) -> None:
        """A claim read (the follower's callback)."""
        if revision <= self.seen:
            return
        self.seen = revision
        if value is not None:
            try:
                item, sig = _parse_claim(value)
            except ValueError:  # not a claim this code wrote: nothing to compare with
                item, sig = "", None
            if sig is not None and sig.size == _PERMUTATIONS:
                row = len(self._items)
                self._items.append(item)
                self._revisions.append(revision)
                if row == len(self._sigs):
                    grown = np.empty((row + row // 2, _PERMUTATIONS), dtype=np.uint32)
                    grown[:row] = self._sigs
                    self._sigs = grown
                self._sigs[row] = sig.astype(np.uint32)
                self._bands.add(_band_keys(sig), row)
        waiting = self._waiting
        while waiting and waiting[0][0] <= revision:
            future = heapq.heappop(waiting)[2]
            if not future.done():
                future.set_result(None)

    async def reach(self, revision: int, timeout_s: float) -> None:
        """Return once every claim up to ``revision`` has been read.

        Raises:
            TimeoutError: not within ``timeout_s``.
        """
        if self.seen >= revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ticket += 1
        heapq.heappush(self._waiting, (revision, self._ticket, future))
        await asyncio.wait_for(future, timeout_s)

    def fail(self, error: Exception) -> None:
        """Wake every waiting claim with ``error``."""
        for _, _, future in self._waiting:
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()

    def similar(
        self, sig: np.ndarray, before: int, item_id: str, threshold: float
    ) -> tuple[str, float] | None:
        """The earliest claim before revision ``before``, of another item, at least
        ``threshold`` similar to ``sig`` (its item and similarity), or None."""
        # Earlier claims of other items (rows are in revision order), all compared at once.
        rows = [
            row
            for row in sorted(self._bands.rows(_band_keys(sig)))
            if self._revisions[row] < before and self._items[row] != item_id
        ]
        if not rows:
            return None
        similarity = (self._sigs[rows] == sig.astype(np.uint32)).mean(axis=1)
        close = np.flatnonzero(similarity >= threshold)
        if not close.size:
            return None
        first = int(close[0])
        return self._items[rows[first]], float(similarity[first])


class _BandTable:
    """LSH band keys -> the rows that hold them, compactly: a key and its row in two sorted
    arrays (12 bytes a band), and the keys added since they were last merged in a dict. A
    merge happens once the dict holds a quarter as many rows as the arrays (or 1,024), so
    merging costs O(n log n) over a job; a dict of every key cost ~1 KiB a claim."""

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=np.int64)
        self._rows = np.empty(0, dtype=np.int32)
        self._fresh: dict[int, list[int]] = {}
        self._fresh_rows = 0

    def add(self, keys: list[int], row: int) -> None:
        for key in keys:
            held = self._fresh.get(key)
            if held is None:
                self._fresh[key] = [row]
            else:
                held.append(row)
        self._fresh_rows += 1
        if self._fresh_rows >= max(1024, self._keys.size // (4 * _BANDS)):
            self._merge()

    def rows(self, keys: list[int]) -> set[int]:
        out: set[int] = set()
        for key in keys:
            out.update(self._fresh.get(key, ()))
        if self._keys.size:
            wanted = np.asarray(keys, dtype=np.int64)
            first = np.searchsorted(self._keys, wanted, side="left")
            last = np.searchsorted(self._keys, wanted, side="right")
            for a, b in zip(first.tolist(), last.tolist(), strict=True):
                if b > a:
                    out.update(self._rows[a:b].tolist())
        return out

    def _merge(self) -> None:
        fresh = self._fresh
        count = sum(len(rows) for rows in fresh.values())
        keys = np.fromiter(
            (key for key, rows in fresh.items() for _ in rows), dtype=np.int64, count=count
        )
        rows = np.fromiter(
            (row for held in fresh.values() for row in held), dtype=np.int32, count=count
        )
        keys = np.concatenate([self._keys, keys])
        rows = np.concatenate([self._rows, rows])
        order = np.argsort(keys, kind="stable")
        self._keys, self._rows = keys[order], rows[order]
        self._fresh = {}
        self._fresh_rows = 0


def _band_keys(sig: np.ndarray) -> list[int]:
    """The signature's LSH band keys, one int a band (this process's hash; never stored)."""
    rows = _PERMUTATIONS // _BANDS
    data = sig.astype(np.uint64, copy=False).tobytes()
    step = 8 * rows
    return [hash((b, data[b * step : (b + 1) * step])) for b in range(_BANDS)]


def _claim_value(item_id: str, sig: np.ndarray | None) -> bytes:
    """A claim's value: the claimant, and its signature when near duplicates are looked for."""
    if sig is None:
        return item_id.encode()
    return f"{item_id}|{base64.b64encode(sig.astype(np.uint64).tobytes()).decode()}".encode()


def _parse_claim(value: bytes) -> tuple[str, np.ndarray | None]:
    """(item, signature) of a claim; a bare item id has no signature."""
    item_id, sep, encoded = value.decode().rpartition("|")
    if not sep:
        return encoded, None
    return item_id, np.frombuffer(base64.b64decode(encoded), dtype=np.uint64)
