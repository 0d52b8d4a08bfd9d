"""Normalizing open labels (tags, use cases, skills) the way InsTag and TACOS do.

Four steps: a canonical form (Unicode-folded, lowercase, punctuation out, each word
lemmatized); merging spelling variants into a more frequent spelling (the same letters run
together, or a typo, a word the dictionary does not know, of a label seen at least twice as
often); merging near-synonyms whose embeddings are at least ``threshold`` similar (the more
frequent label absorbs the other); then dropping labels seen fewer than ``min_frequency``
times. Every merge and drop is reported, so a user sees what became of each label.

The spelling step is string work, so the embedder sees only one spelling of each label: on a
real-shaped 100k-row corpus (``benchmarks/tag_quality_bench.py``) it left 17.4k of 31.8k
canonical forms to embed, and against the concepts the tags were drawn from it kept more
occurrences with their concept (with MiniLM: 98.4% against 97.1%, 1.4% against 2.7% dropped)
with fewer labels per concept (6.7k against 11.6k labels for 3.9k concepts), as an embedder
often puts a typo below the threshold ("grnaite" is no word piece of "granite").
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import simplemma
from numpy.typing import NDArray

from taxoforge.embeddings import Embedder

__all__ = ["Normalized", "canonical", "greedy_merge", "normalize_labels", "spelling_variants"]

# The merge's matrix products: at most this many floats of scratch, in blocks of rows no
# larger than _MAX_BLOCK (bigger blocks gain nothing once BLAS is busy).
_SCRATCH = 1 << 24
_MAX_BLOCK = 1024

# A typo is looked for only between labels of at least this many letters (shorter words are
# one edit from too many others: "tone", "tune", "note"), and merged only into a label seen at
# least _TYPO_RATIO times as often (the rarer of two spellings is the misspelt one).
_TYPO_MIN_LETTERS = 5
_TYPO_RATIO = 2
# Labels holding a character from here on (CJK radicals and ideographs, kana, hangul...) are
# never typo-merged: there a character is a word or a syllable, not a letter.
_IDEOGRAPHS = "\u2e80"

_PUNCT = re.compile(r"[^\w\s-]+")
_SPACE = re.compile(r"[\s_-]+")


def canonical(label: str, language: str = "en") -> str:
    """The label's canonical form: "Data-Structures!" and "data structure" are the same."""
    return _lemmatized(_folded(label), language)


def _folded(label: str) -> str:
    """The label Unicode-folded, lowercase, punctuation out: its words as written."""
    text = unicodedata.normalize("NFKC", label).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def _lemmatized(text: str, language: str) -> str:
    words = [simplemma.lemmatize(word, lang=language) for word in text.split()]
    return " ".join(w.casefold() for w in words)


@dataclass
class Normalized:
    """What normalization kept, merged and dropped."""

    # Every raw label -> the label it counts as now (absent: dropped).
    mapping: dict[str, str] = field(default_factory=dict)
    # Kept labels and how often they occur (merged labels' counts included).
    counts: Counter[str] = field(default_factory=Counter)
    # Kept label -> the canonical labels merged into it.
    merges: dict[str, list[str]] = field(default_factory=dict)
    # (label, count, reason) for each dropped label.
    dropped: list[tuple[str, int, str]] = field(default_factory=list)


async def normalize_labels(
    labels: Sequence[str],
    embedder: Embedder | None,
    min_frequency: int = 2,
    threshold: float = 0.85,
    language: str = "en",
    *,
    spelling: bool = True,
) -> Normalized:
    """Normalize a bag of labels (with repeats: frequency counts).

    The CPU-bound parts (canonical forms, the merge, the counts) run in a worker thread, so
    the caller's event loop keeps serving (a selector's NATS heartbeats among others).

    Args:
        labels: every occurrence of every label.
        embedder: gives the similarity for merging; None merges canonical forms and spelling
            variants only.
        min_frequency: labels (after merging) seen fewer times are dropped.
        threshold: cosine similarity at which two labels are one.
        spelling: merge spelling variants before embedding (False: the embedder sees every
            canonical form; ``benchmarks/tag_quality_bench.py`` compares the two).
    """
    raw_to_canon, canon_counts, empty, spelled, heads = await asyncio.to_thread(
        _spelled_counts, labels, language, spelling
    )
    into = spelled
    if embedder is not None and len(heads) > 1:
        vectors = np.asarray(await embedder.embed(heads), dtype=np.float32)
        rep_of = await asyncio.to_thread(greedy_merge, vectors, threshold)
        head_into = {h: heads[int(r)] for h, r in zip(heads, rep_of.tolist(), strict=True)}
        into = {c: head_into[h] for c, h in spelled.items()}
    return await asyncio.to_thread(_finish, raw_to_canon, canon_counts, empty, into, min_frequency)


def _spelled_counts(
    labels: Sequence[str], language: str, spelling: bool
) -> tuple[dict[str, str], Counter[str], Counter[str], dict[str, str], list[str]]:
    """:func:`_canonical_counts`, then each canonical form's spelling (its head) and the heads
    most frequent first (counting their variants; ties alphabetical): what the embedder sees."""
    raw_to_canon, canon_counts, empty, written = _canonical_counts(labels, language)
    # Most frequent first, so the common form absorbs its rarer variants; ties alphabetical.
    ordered = sorted(canon_counts, key=lambda c: (-canon_counts[c], c))
    spelled = (
        spelling_variants(ordered, canon_counts, language, written)
        if spelling
        else {c: c for c in ordered}
    )
    head_counts: Counter[str] = Counter()
    for canon, head in spelled.items():
        head_counts[head] += canon_counts[canon]
    heads = sorted(head_counts, key=lambda h: (-head_counts[h], h))
    return raw_to_canon, canon_counts, empty, spelled, heads


def _canonical_counts(
    labels: Sequence[str], language: str
) -> tuple[dict[str, str], Counter[str], Counter[str], dict[str, set[str]]]:
    """Each raw label's canonical form (computed once per distinct label), how often each
    canonical form occurs, the labels that have none, and each canonical form's letters as
    written before lemmatization (spaces out), where they differ from its own."""
    raw_to_canon: dict[str, str] = {}
    canon_counts: Counter[str] = Counter()
    empty: Counter[str] = Counter()
    written: dict[str, set[str]] = {}
    for label, count in Counter(labels).items():
        folded = _folded(label)
        canon = raw_to_canon[label] = _lemmatized(folded, language)
        if canon:
            canon_counts[canon] += count
            letters = folded.replace(" ", "")
            if letters != canon.replace(" ", ""):
                written.setdefault(canon, set()).add(letters)
        else:
            empty[label] += count
    return raw_to_canon, canon_counts, empty, written


def spelling_variants(
    ordered: Sequence[str],
    counts: Counter[str],
    language: str = "en",
    written: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, str]:
    """Each label's spelling head: the first label before it (``ordered`` is most frequent
    first) that is the same letters with the spaces left out ("data structure",
    "datastructure"); else, for a label of at least five letters with a word the language's
    dictionary does not know, the most frequent label one edit away (a letter dropped, added,
    replaced, or two neighbours swapped: "granite", "grnaite") of at least five letters and
    seen at least twice as often; else the label itself. Heads map to themselves.

    ``written`` gives a label's other spellings (its letters as written before lemmatizing,
    spaces out): one edit between any spelling of the label and any of the head's counts, so
    a typo in an inflected word ("ahcieving goals", which no lemmatizer knows) finds the head
    by how that was written ("achieving goals", lemmatized "achieve goal").

    Words the dictionary knows are not typos ("casual" is no misspelling of "causal"); in a
    language it has no dictionary for, any word may be one. Neither are labels in scripts
    whose characters are words or syllables (Chinese, Japanese, Korean: "机器学习算法" and
    "机器学习方法" are an algorithm and a method). Candidates come from an index of
    each head's spellings less one letter (SymSpell's), so the pass is linear in labels, and
    each candidate is checked exactly.
    """
    written = written or {}
    head_of: dict[str, str] = {}
    by_letters: dict[str, str] = {}  # a head's letters without spaces -> the head
    # A head's spelling, and it less one letter -> (head, spelling). Only heads seen at least
    # _TYPO_RATIO times are indexed: a label is a typo of a head seen that many times as often
    # as itself, and every label is seen at least once (on a long tail most heads are seen
    # once, and indexing them was most of the pass).
    deletions: dict[str, list[tuple[str, str]]] = {}
    known: dict[str, bool] = {}  # each word's answer from the dictionary, asked once
    for label in ordered:
        letters = label.replace(" ", "")
        head = by_letters.get(letters)
        if head is not None:
            head_of[label] = head
            continue
        count = counts[label]
        typo_checked = len(letters) >= _TYPO_MIN_LETTERS and max(letters) < _IDEOGRAPHS
        indexed = count >= _TYPO_RATIO
        # Each spelling with its keys (itself and it less one letter): looked up, then, for a
        # new head, indexed.
        keyed = (
            [
                (spelt, {spelt, *_deletions(spelt)})
                for spelt in {letters, *written.get(label, ())}
                if len(spelt) >= _TYPO_MIN_LETTERS
            ]
            if typo_checked or indexed
            else []
        )
        if typo_checked:
            head = _typo_of(keyed, count, counts, deletions)
            if head is not None and _all_known(label, language, known):
                head = None
        if head is not None:
            head_of[label] = head
            continue
        head_of[label] = label
        by_letters[letters] = label
        if indexed:
            for spelt, keys in keyed:
                for key in keys:
                    deletions.setdefault(key, []).append((label, spelt))
    return head_of


def _all_known(label: str, language: str, known: dict[str, bool]) -> bool:
    """Whether the language's dictionary knows every word of ``label`` (False without one);
    ``known`` keeps each word's answer (labels share their words)."""
    for word in label.split():
        answer = known.get(word)
        if answer is None:
            try:
                answer = known[word] = simplemma.is_known(word, lang=language)
            except ValueError:  # a language simplemma has no dictionary for
                return False
        if not answer:
            return False
    return True


def _deletions(word: str) -> list[str]:
    return [word[:i] + word[i + 1 :] for i in range(len(word))]


def _typo_of(
    keyed: Sequence[tuple[str, set[str]]],
    count: int,
    counts: Counter[str],
    deletions: dict[str, list[tuple[str, str]]],
) -> str | None:
    """The most frequent head (ties alphabetical) with a spelling one edit from one of the
    label's spellings (``keyed``: each with its deletion keys) and seen at least _TYPO_RATIO
    times as often, if any."""
    best: str | None = None
    for spelt, keys in keyed:
        for key in keys:
            for head, theirs in deletions.get(key, ()):
                if (
                    counts[head] >= _TYPO_RATIO * count
                    and (best is None or (-counts[head], head) < (-counts[best], best))
                    and _one_edit(spelt, theirs)
                ):
                    best = head
    return best


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by one edit: a letter dropped, added or replaced, or two
    neighbouring letters swapped (optimal string alignment distance 1)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < len(a) and i < len(b) and a[i] == b[i]:
        i += 1
    if len(a) > len(b):
        return a[i + 1 :] == b[i:]
    if len(a) < len(b):
        return a[i:] == b[i + 1 :]
    return a[i + 1 :] == b[i + 1 :] or (
        i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]
    )


def greedy_merge(vectors: NDArray[np.float32], threshold: float) -> NDArray[np.int64]:
    """The greedy merge: walking the rows in order, each row joins the most similar earlier
    *kept* row (a representative) when their cosine is at least ``threshold`` (ties: the
    earlier representative), else it is kept itself. Returns each row's representative.

    Same result as comparing each row with every representative before it, without that
    walk's quadratic Python loop: a block of rows is compared with the representatives
    before the block in one matrix product (only pairs at or above the threshold are kept, a
    few per row), then with the rows of its own block; the walk then only looks at those few
    candidates. Rows must be L2-normalized (the embedders' are).
    """
    n = vectors.shape[0]
    rep_of = np.arange(n, dtype=np.int64)
    if n < 2:
        return rep_of
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    is_rep = np.zeros(n, dtype=bool)
    reps: list[int] = []  # representatives so far, ascending
    # Scratch of at most ~_SCRATCH floats per matrix product, so memory stays flat.
    block = max(64, min(_MAX_BLOCK, _SCRATCH // max(n, 1)))
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = x[start:stop]
        before = np.asarray(reps, dtype=np.int64)
        # Candidates among earlier blocks' representatives (final already).
        cand_before: list[list[tuple[float, int]]] = [[] for _ in range(stop - start)]
        if before.size:
            sims = rows @ x[before].T
            r, c = np.nonzero(sims >= threshold)
            for ri, ci, s in zip(r.tolist(), c.tolist(), sims[r, c].tolist(), strict=True):
                cand_before[ri].append((s, int(before[ci])))
        # Candidates within the block (earlier rows only); whether they are representatives
        # is known only as the walk reaches them.
        inner = rows @ rows.T
        inner[np.triu_indices(stop - start)] = -np.inf
        r, c = np.nonzero(inner >= threshold)
        cand_inner: list[list[tuple[float, int]]] = [[] for _ in range(stop - start)]
        for ri, ci, s in zip(r.tolist(), c.tolist(), inner[r, c].tolist(), strict=True):
            cand_inner[ri].append((s, start + ci))
        for offset in range(stop - start):
            i = start + offset
            best, best_j = -np.inf, -1
            for s, j in cand_before[offset] + cand_inner[offset]:
                if is_rep[j] and (s > best or (s == best and j < best_j)):
                    best, best_j = s, j
            if best_j >= 0:
                rep_of[i] = best_j
            else:
                is_rep[i] = True
                reps.append(i)
    return rep_of


def _finish(
    raw_to_canon: dict[str, str],
    canon_counts: Counter[str],
    empty: Counter[str],
    into: dict[str, str],
    min_frequency: int,
) -> Normalized:
    out = Normalized()
    for label, count in empty.items():
        out.dropped.append((label, count, "nothing left after normalization"))
    merged_counts: Counter[str] = Counter()
    for canon, rep in into.items():
        merged_counts[rep] += canon_counts[canon]
        if canon != rep:
            out.merges.setdefault(rep, []).append(canon)
    for rep, count in merged_counts.items():
        if count < min_frequency:
            out.dropped.append((rep, count, f"seen {count} times, fewer than {min_frequency}"))
        else:
            out.counts[rep] = count
    out.dropped.sort(key=lambda d: (-d[1], d[0]))
    for rep in [r for r in out.merges if r not in out.counts]:
        del out.merges[rep]
    for raw, canon in raw_to_canon.items():
        rep = into.get(canon, "")
        if rep in out.counts:
            out.mapping[raw] = rep
    return out
